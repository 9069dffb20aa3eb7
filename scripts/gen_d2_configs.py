"""Write the per-variant Detectron2 configs of configs/detectron2/ (run once; the output is committed).

    python scripts/gen_d2_configs.py            # (re)write them
    python scripts/gen_d2_configs.py --check    # exit 1 if a committed config differs from what would be written
    python scripts/gen_d2_configs.py --table    # print the README table of builders and configs

* yacs (``tools/train_net.py --config-file``), each on one of the hand-written ``Base-EffViT-*.yaml``:
  COCO Mask R-CNN 1x and RetinaNet 1x for every variant (``COCO-InstanceSegmentation/``, ``COCO-Detection/``),
  LVIS v1 Mask R-CNN and Cityscapes Semantic FPN for one variant per family (``LVISv1-InstanceSegmentation/``,
  ``Cityscapes-SemanticSegmentation/``), and the demo configs (``demo/``: the same models scaled down to train
  from scratch on the generated demo sets on a CPU).
* LazyConfig (Detectron2's ``tools/lazyconfig_train_net.py``): the COCO Mask R-CNN configs
  (``LazyConfigs/COCO-InstanceSegmentation/``, on ``LazyConfigs/common/mask_rcnn_effvit_fpn.py``).

Recipes: the official ones where they exist (EfficientViT-MSRA M4 RetinaNet / Mask R-CNN, EfficientFormer V1/V2
Mask R-CNN: optimiser, weight decay, warm-up; and the official dense-backbone options: EfficientFormer's
dense attention-bias tables, stochastic depth, L7's layer scale), else AdamW lr 1e-4, wd 0.05 without decay on
norms and attention biases (the Base files). Schedules are Detectron2's (1x = 90k iterations of 16 images, lr x0.1
at 60k and 80k). Each file's header says which recipe and what was published.
"""
import argparse
import os
import sys
import textwrap
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join("configs", "detectron2")

FAMILIES = [
    # key (MODEL.EFFVIT.FAMILY), file-name token, title, variants, Detectron2 class, official ImageNet file
    dict(key="efficientvit_mit", token="efficientvit_mit", title="EfficientViT (MIT)",
         variants=("b0", "b1", "b2", "b3", "l1", "l2", "l3"), cls="D2EfficientViTMIT", weights="efficientvit_{v}_r224.pt"),
    dict(key="efficientvit_msra", token="efficientvit_msra", title="EfficientViT (MSRA)",
         variants=("m0", "m1", "m2", "m3", "m4", "m5"), cls="D2EfficientViTMSRA", weights="efficientvit_{v}.pth"),
    dict(key="edgevit", token="edgevit", title="EdgeViT", variants=("xxs", "xs", "s"), cls="D2EdgeViT",
         weights=None),
    dict(key="efficientformer_v1", token="efficientformer", title="EfficientFormer", variants=("l1", "l3", "l7"),
         cls="D2EfficientFormerV1", weights="efficientformer_{v}_300d.pth"),
    dict(key="efficientformer_v2", token="efficientformerv2", title="EfficientFormerV2",
         variants=("s0", "s1", "s2", "l"), cls="D2EfficientFormerV2", weights="eformer_{v}_450.pth"),
]
ONE_PER_FAMILY = {"efficientvit_mit": "b1", "efficientvit_msra": "m4", "edgevit": "xs", "efficientformer_v1": "l1",
                  "efficientformer_v2": "s2"}

# official dense backbones of EfficientFormer (snap-research/EfficientFormer detection/ and segmentation/):
# "_seg" attention-bias tables (V1: side of the stride-32 token grid, V2: image side), stochastic depth, L7 layer scale
EF_SEG_RESOLUTION = {("efficientformer_v1", "det"): 25, ("efficientformer_v1", "seg"): 16,
                     ("efficientformer_v2", "det"): 800, ("efficientformer_v2", "seg"): 512}
EF_DROP_PATH = {"s2": 0.02, "l": 0.1}
EF_LAYER_SCALE = {"l7": 1e-6}
MSRA_OFFICIAL = "m4"

TASKS = {
    # task -> (folder, Base file, file-name pattern, title)
    "mask_rcnn": ("COCO-InstanceSegmentation", "Base-EffViT-MaskRCNN-FPN.yaml", "mask_rcnn_{name}_{neck}_1x",
                  "Mask R-CNN 1x, COCO 2017"),
    "retinanet": ("COCO-Detection", "Base-EffViT-RetinaNet.yaml", "retinanet_{name}_{neck}_1x",
                  "RetinaNet 1x, COCO 2017"),
    "lvis": ("LVISv1-InstanceSegmentation", "Base-EffViT-LVIS-MaskRCNN-FPN.yaml", "mask_rcnn_{name}_{neck}_1x",
             "Mask R-CNN, LVIS v1 (repeat-factor sampling 1e-3, federated sigmoid loss, 180k iterations)"),
    "semseg": ("Cityscapes-SemanticSegmentation", "Base-EffViT-SemanticFPN.yaml", "semantic_{name}_{neck}_40k",
               "Semantic FPN, Cityscapes 512x1024 crops, 40k iterations"),
}
STANDARD_RECIPE = ("the Base file's: AdamW lr 1e-4, weight decay 0.05 without decay on norm layers and "
                   "attention-bias tables, 1000-iteration linear warm-up; no official recipe exists for this model")
PUBLISHED = {
    ("efficientvit_msra", "m4", "retinanet"): "box AP 32.7 (mmdet 2.x, ImageNet-1k weights; microsoft/Cream "
                                              "EfficientViT/downstream README)",
    ("efficientvit_msra", "m4", "mask_rcnn"): "mask AP 31.0 (mmdet 2.x, ImageNet-1k weights; microsoft/Cream "
                                              "EfficientViT/downstream README; box AP not given)",
}
WIDTH = 116
DEMO_WIDTH = 64  # channels of the demo configs' FPN and heads (full configs: 256, heads 128-1024)

# demo configs: trained from scratch on the generated demo sets (tools/generate_demo_data.py) on a CPU
DEMO = {
    "mask_rcnn": dict(family="efficientvit_mit", variant="b1", dataset="coco_demo", iters=60),
    "lvis": dict(family="efficientvit_mit", variant="b1", dataset="lvis_v1_demo", iters=20),
    "semseg": dict(family="efficientvit_mit", variant="b1", dataset="cityscapes_demo_sem_seg", iters=20),
}


def comment(text: str) -> str:
    return "\n".join(textwrap.wrap(text, WIDTH, initial_indent="# ", subsequent_indent="#   ",
                                   break_on_hyphens=False, break_long_words=False))


def family(key: str) -> dict:
    return next(f for f in FAMILIES if f["key"] == key)


def out_features(fam: dict, task: str) -> List[str]:
    if fam["key"] == "efficientvit_msra":
        return ["res4", "res5", "res6"]  # strides 16/32/64; the upsampling FPN makes the finer levels
    return ["res3", "res4", "res5"] if task == "retinanet" else ["res2", "res3", "res4", "res5"]


def backbone_options(fam: dict, v: str, task: str) -> Dict[str, object]:
    opts: Dict[str, object] = {"OUT_FEATURES": out_features(fam, task)}
    if fam["key"].startswith("efficientformer"):
        # official dense code: BatchNorm statistics are trained
        opts["SEG_RESOLUTION"] = EF_SEG_RESOLUTION[(fam["key"], "seg" if task == "semseg" else "det")]
        if v in EF_DROP_PATH:
            opts["DROP_PATH_RATE"] = EF_DROP_PATH[v]
        if v in EF_LAYER_SCALE and task != "semseg":
            opts["LAYER_SCALE_INIT_VALUE"] = EF_LAYER_SCALE[v]
    else:
        # BatchNorm statistics stay at their ImageNet values (2 images per GPU); the official MSRA downstream
        # backbone always does this
        opts["NORM_EVAL"] = True
    return opts


def recipe(fam: dict, v: str, task: str):
    """(header text, SOLVER overrides)."""
    lvis = "; no official LVIS recipe exists, this is the COCO one on Detectron2's LVIS v1 settings" \
        if task == "lvis" else ""
    if fam["key"] == "efficientvit_msra" and v == MSRA_OFFICIAL and task in ("mask_rcnn", "retinanet", "lvis"):
        src = "retinanet" if task == "retinanet" else "mask_rcnn"
        return (f"official (microsoft/Cream EfficientViT/downstream/configs/{src}_efficientvit_m4_fpn_1x_coco.py): "
                "AdamW lr 1e-4, weight decay 0.05 except on attention_biases (also on norms), 500-iteration linear "
                "warm-up from 0.001, 12 epochs with lr x0.1 after 8 and 11 (here Detectron2's 1x)" + lvis,
                dict(BASE_LR=1e-4, WEIGHT_DECAY=0.05, WEIGHT_DECAY_NORM=0.05, WEIGHT_DECAY_ATTN_BIAS=0.0,
                     WARMUP_ITERS=500, WARMUP_FACTOR=0.001))
    if fam["key"].startswith("efficientformer") and task in ("mask_rcnn", "lvis"):
        wd = 1e-4 if fam["key"].endswith("v1") else 0.05
        return (f"official (snap-research/EfficientFormer detection/configs/mask_rcnn_{fam['token']}_{v}_fpn_1x_coco.py): "
                f"AdamW "
                f"lr 2e-4, weight decay {wd:g} on every parameter, 500-iteration linear warm-up from 1e-6, 12 epochs "
                "with lr x0.1 after 8 and 11 (here Detectron2's 1x)" + lvis,
                dict(BASE_LR=2e-4, WEIGHT_DECAY=wd, WEIGHT_DECAY_NORM=wd, WEIGHT_DECAY_ATTN_BIAS=wd,
                     WARMUP_ITERS=500, WARMUP_FACTOR=1e-6))
    if task == "semseg":
        return ("the Base file's (the official EfficientFormer Semantic FPN optimiser and schedule)", {})
    return STANDARD_RECIPE + lvis, {}


def yaml_value(v) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):  # Detectron2's YAML files write tuples in Python syntax
        return "(" + ", ".join(yaml_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(yaml_value(x) for x in v) + "]"
    if isinstance(v, float):  # YAML 1.1 (PyYAML) reads 1e-06 as a string: write 1.0e-06
        r = repr(v)
        return r.replace("e", ".0e") if "e" in r and "." not in r else r
    return str(v)


def yaml_block(tree: Dict[str, object], indent: int = 0) -> List[str]:
    lines = []
    for k, v in tree.items():
        if isinstance(v, dict):
            lines.append(" " * indent + f"{k}:")
            lines += yaml_block(v, indent + 2)
        else:
            lines.append(" " * indent + f"{k}: {yaml_value(v)}")
    return lines


def name_of(fam: dict, v: str) -> str:
    return f"{fam['token']}_{v}"


def neck_of(fam: dict) -> str:
    return "upfpn" if fam["key"] == "efficientvit_msra" else "fpn"


def rel_path(task: str, fam: dict, v: str) -> str:
    folder, _, pattern, _ = TASKS[task]
    return os.path.join(OUT, folder, pattern.format(name=name_of(fam, v), neck=neck_of(fam)) + ".yaml")


def weights_line(fam: dict, v: str) -> str:
    if fam["weights"] is None:
        return comment("ImageNet weights: none were released for EdgeViT (without MODEL.WEIGHTS the backbone trains "
                       "from scratch).")
    w = fam["weights"].format(v=v)
    return comment(f"ImageNet weights (recommended): MODEL.WEIGHTS {w} (the official file; tools/train_net.py "
                   f"converts it on load).")


def model_tree(fam: dict, v: str, task: str) -> Dict[str, object]:
    kind = "_retinanet_fpn" if task == "retinanet" else "_fpn"
    tree: Dict[str, object] = {"BACKBONE": {"NAME": f"build_{fam['key']}{kind}_backbone"},
                               "EFFVIT": {"FAMILY": fam["key"], "ARCH": v, **backbone_options(fam, v, task)}}
    if fam["key"] == "efficientvit_msra":
        tree["FPN"] = {"IN_FEATURES": out_features(fam, task)}
    return tree


def render(task: str, fam: dict, v: str) -> str:
    folder, base, _, title = TASKS[task]
    neck = ("the official upsampling FPN (strides " + ("8-128)" if task == "retinanet" else "4-64)")
            if fam["key"] == "efficientvit_msra" else "FPN")
    rec_text, solver = recipe(fam, v, task)
    published = PUBLISHED.get((fam["key"], v, task), "none published")
    head = [comment(f"{title}; {fam['title']} {v.upper()} + {neck}."), comment(f"Recipe: {rec_text}."),
            comment(f"Published: {published}."), weights_line(fam, v), "# Generated by scripts/gen_d2_configs.py."]
    tree: Dict[str, object] = {"MODEL": model_tree(fam, v, task)}
    if solver:
        tree["SOLVER"] = solver
    return "\n".join(head + [f'_BASE_: "../{base}"'] + yaml_block(tree)) + "\n"


DEMO_DATA = {
    "coco_demo": ("coco", "3 of its 80 COCO classes ('sports ball', 'tv', 'kite': circles, squares, triangles)"),
    "lvis_v1_demo": ("lvis", "3 of its 1203 LVIS classes, one per frequency group"),
    "cityscapes_demo_sem_seg": ("cityscapes", "synthetic street scenes with 10 of the 19 classes"),
}


def render_demo(task: str) -> str:
    d = DEMO[task]
    fam = family(d["family"])
    v = d["variant"]
    kind, what = DEMO_DATA[d["dataset"]]
    size = (128, 256) if task == "semseg" else (128, 128)
    head = [comment(f"{TASKS[task][3].split(',')[0]} with {fam['title']} {v.upper()}, trained from scratch on a CPU on "
                    f"the generated {kind} demo set ({what}; python tools/generate_demo_data.py --dataset {kind} "
                    f"--out datasets/{d['dataset'].replace('_sem_seg', '')})."),
            comment(f"{os.path.basename(rel_path(task, fam, v))} scaled down: {size[0]}x{size[1]} images, "
                    f"{DEMO_WIDTH}-channel FPN and heads, {d['iters']} iterations of 4 images, AdamW lr 1e-3 after a 10-iteration warm-up, "
                    "BatchNorm statistics trained (no ImageNet weights), no data-loading workers, seed 0"
                    + (", 100 detections per image." if task == "lvis" else ".")),
            "# Generated by scripts/gen_d2_configs.py."]
    opts: Dict[str, object] = {"EFFVIT": {"NORM_EVAL": False}, "FPN": {"OUT_CHANNELS": DEMO_WIDTH}}
    if task == "semseg":
        opts["SEM_SEG_HEAD"] = {"CONVS_DIM": DEMO_WIDTH}
    else:
        opts["RPN"] = {"PRE_NMS_TOPK_TRAIN": 500, "PRE_NMS_TOPK_TEST": 500, "POST_NMS_TOPK_TRAIN": 200,
                       "POST_NMS_TOPK_TEST": 200}
        opts["ROI_HEADS"] = {"BATCH_SIZE_PER_IMAGE": 64}
        # fixed 2x2 RoIAlign sampling: the adaptive default costs more than the rest of the heads on a CPU
        opts["ROI_BOX_HEAD"] = {"FC_DIM": 256, "POOLER_SAMPLING_RATIO": 2}
        opts["ROI_MASK_HEAD"] = {"CONV_DIM": DEMO_WIDTH, "POOLER_SAMPLING_RATIO": 2}
    tree: Dict[str, object] = {
        "MODEL": opts,
        "DATASETS": {"TRAIN": (f"{d['dataset']}_train",), "TEST": (f"{d['dataset']}_val",)},
        "INPUT": ({"MIN_SIZE_TRAIN": (128,), "MAX_SIZE_TRAIN": 256, "MIN_SIZE_TEST": 128, "MAX_SIZE_TEST": 256,
                   "CROP": {"ENABLED": False}} if task == "semseg" else
                  {"MIN_SIZE_TRAIN": (128,), "MAX_SIZE_TRAIN": 128, "MIN_SIZE_TEST": 128, "MAX_SIZE_TEST": 128}),
        "SOLVER": {"IMS_PER_BATCH": 4, "BASE_LR": 0.001, "STEPS": (), "MAX_ITER": d["iters"], "WARMUP_ITERS": 10,
                   "CHECKPOINT_PERIOD": d["iters"]},
        "DATALOADER": {"NUM_WORKERS": 0},
        "TEST": {"EVAL_PERIOD": 0},
        "SEED": 0,
    }
    if task == "lvis":  # (300 detections x 1203 class-specific 28x28 masks per image cost seconds on a CPU)
        tree["TEST"]["DETECTIONS_PER_IMAGE"] = 100
    if task == "semseg":
        tree["SOLVER"].pop("STEPS")
    lines = head + [f'_BASE_: "../{TASKS[task][0]}/{os.path.basename(rel_path(task, fam, v))}"'] + yaml_block(tree)
    return "\n".join(lines) + "\n"


def demo_path(task: str) -> str:
    d = DEMO[task]
    fam = family(d["family"])
    stem = os.path.splitext(os.path.basename(rel_path(task, fam, d["variant"])))[0]
    return os.path.join(OUT, "demo", f"{stem}_{d['dataset']}.yaml")


# ---------------------------------------------------------------------------------------------------------------
# LazyConfig
# ---------------------------------------------------------------------------------------------------------------
LAZY = os.path.join(OUT, "LazyConfigs")


def lazy_path(fam: dict, v: str) -> str:
    return os.path.join(LAZY, "COCO-InstanceSegmentation", f"mask_rcnn_{name_of(fam, v)}_{neck_of(fam)}_1x.py")


def py_value(v) -> str:
    return repr(list(v)) if isinstance(v, tuple) else repr(v)


def render_lazy(fam: dict, v: str) -> str:
    opts = backbone_options(fam, v, "mask_rcnn")
    kw = {"arch": v, "out_features": opts.pop("OUT_FEATURES")}
    names = {"NORM_EVAL": "norm_eval", "SEG_RESOLUTION": "seg_resolution", "DROP_PATH_RATE": "drop_path_rate",
             "LAYER_SCALE_INIT_VALUE": "layer_scale_init_value"}
    kw.update({names[k]: val for k, val in opts.items()})

    def call(cls: str, indent: str) -> str:
        """``L(cls)(k=v, ...)``, one argument per line."""
        inner = "".join(f"\n{indent}    {k}={py_value(val)}," for k, val in kw.items())
        return f"L({cls})({inner}\n{indent})"

    rec_text, solver = recipe(fam, v, "mask_rcnn")
    yaml_rel = os.path.relpath(rel_path("mask_rcnn", fam, v), LAZY)
    lines = [comment(f"LazyConfig of {yaml_rel} (for Detectron2's tools/lazyconfig_train_net.py): Mask R-CNN 1x, "
                     f"COCO 2017; {fam['title']} {v.upper()}."),
             comment(f"Recipe: {rec_text}."),
             comment("ImageNet weights: train.init_checkpoint=<file written by tools/convert_checkpoint.py OFFICIAL "
                     "OUT --to detectron2>." if fam["weights"] else "ImageNet weights: none were released."),
             "# Generated by scripts/gen_d2_configs.py.",
             "from detectron2.config import LazyCall as L",
             "",
             f"from effvit_plugins.detectron2 import {fam['cls']}"
             + (", UpsampleFPNBackbone" if fam["key"] == "efficientvit_msra" else ""),
             "",
             "from ..common.mask_rcnn_effvit_fpn import dataloader, lr_multiplier, model, optimizer, train",
             ""]
    if fam["key"] == "efficientvit_msra":
        lines += ["# strides 16/32/64 -> P2-P6 by the official upsampling FPN (two transposed-conv levels)",
                  "model.backbone = L(UpsampleFPNBackbone)(",
                  f"    bottom_up={call(fam['cls'], '    ')},",
                  '    in_features="${.bottom_up.out_features}",',
                  "    out_channels=256,",
                  "    finest_stride=4,",
                  ")"]
    else:
        lines += [f"model.backbone.bottom_up = {call(fam['cls'], '')}"]
    if solver:
        lines += [f"optimizer.lr = {solver['BASE_LR']!r}",
                  f"optimizer.weight_decay = {solver['WEIGHT_DECAY']!r}",
                  f"optimizer.params.weight_decay_norm = {solver['WEIGHT_DECAY_NORM']!r}",
                  "optimizer.params.overrides = {name: {\"weight_decay\": "
                  f"{solver['WEIGHT_DECAY_ATTN_BIAS']!r}" "} for name in (\"attention_biases\", "
                  "\"attention_biases_seg\")}",
                  f"lr_multiplier.warmup_length = {solver['WARMUP_ITERS']} / train.max_iter",
                  f"lr_multiplier.warmup_factor = {solver['WARMUP_FACTOR']!r}"]
    return "\n".join(lines) + "\n"


def configs() -> Dict[str, str]:
    """relative path -> text, for every generated file."""
    out = {}
    for fam in FAMILIES:
        for v in fam["variants"]:
            tasks = ["mask_rcnn", "retinanet"] + (["lvis", "semseg"] if ONE_PER_FAMILY[fam["key"]] == v else [])
            for task in tasks:
                out[rel_path(task, fam, v)] = render(task, fam, v)
            out[lazy_path(fam, v)] = render_lazy(fam, v)
    for task in DEMO:
        out[demo_path(task)] = render_demo(task)
    return out


def table() -> str:
    """The README table: builders and the configs of every variant."""
    def link(path: Optional[str]) -> str:
        return f"[`{os.path.basename(path)}`]({path})" if path else "—"

    lines = ["| backbone | builders (`MODEL.BACKBONE.NAME`) | Mask R-CNN 1x COCO | RetinaNet 1x COCO | "
             "LVIS v1 Mask R-CNN | Cityscapes Semantic FPN | LazyConfig (Mask R-CNN) |",
             "|---|---|---|---|---|---|---|"]
    for fam in FAMILIES:
        for i, v in enumerate(fam["variants"]):
            one = ONE_PER_FAMILY[fam["key"]] == v
            builders = (f"`build_{fam['key']}_backbone`, `_fpn_backbone`, `_retinanet_fpn_backbone`"
                        if i == 0 else "")
            lines.append(f"| {fam['title']} {v.upper()} | {builders} | {link(rel_path('mask_rcnn', fam, v))} | "
                         f"{link(rel_path('retinanet', fam, v))} | "
                         f"{link(rel_path('lvis', fam, v) if one else None)} | "
                         f"{link(rel_path('semseg', fam, v) if one else None)} | {link(lazy_path(fam, v))} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare with the committed configs")
    p.add_argument("--table", action="store_true", help="print the README table instead")
    args = p.parse_args(argv)
    if args.table:
        print(table())
        return 0
    stale = []
    for rel, text in configs().items():
        path = os.path.join(ROOT, rel)
        old = open(path).read() if os.path.isfile(path) else None
        if old == text:
            continue
        stale.append(rel)
        if not args.check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    if args.check:
        for rel in stale:
            print(f"out of date: {rel}")
        return 1 if stale else 0
    print(f"wrote {len(stale)} of {len(configs())} configs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
