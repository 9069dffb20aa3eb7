"""Write the mmdet 3.x COCO / LVIS v1 configs for every variant of the four families (run once; committed).

    python scripts/gen_det_configs.py            # (re)write configs/<family>/{retinanet,mask-rcnn}_*.py
    python scripts/gen_det_configs.py --table    # print the README table of the configs instead
    python scripts/gen_det_configs.py --check    # exit 1 if a committed config differs from what would be written

* RetinaNet 1x and Mask R-CNN 1x on COCO 2017 for every variant; Mask R-CNN on LVIS v1 for one variant per
  backbone type (:data:`LVIS_VARIANTS`).
* Backbone channels come from the registered backbones themselves (built on the meta device), never retyped.
* Recipes (schedule bases under ``configs/_base_/mmdet/schedules/``): the official ones where they exist
  (EfficientViT-MSRA M4 RetinaNet / Mask R-CNN, EfficientFormer V1/V2 Mask R-CNN), else mmdet's standard AdamW 1x
  recipe for transformer backbones (``adamw_1x.py``); each config header says which, and the published result or
  "none published".
"""
import argparse
import os
import sys
import textwrap
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# EfficientFormer's dense backbones build their "_seg" attention-bias tables for this resolution (official
# detection code: V1 25 = side of the stride-32 token grid, V2 800 = image side in pixels).
EF_DET_SEG_RESOLUTION = {1: 25, 2: 800}
# official detection backbones (EfficientFormer detection/backbone{,v2}.py): stochastic depth and L7's layer scale
EF_DET_DROP_PATH = {"s2": 0.02, "l": 0.1}
EF_DET_LAYER_SCALE = {"l7": 1e-6}
MSRA_OFFICIAL = "m4"

FAMILIES = [
    # folder, backbone type, config prefix, title, variants, official ImageNet file (example)
    dict(folder="efficientvit_mit", type="EfficientViTMIT", prefix="efficientvit-mit", title="EfficientViT (MIT)",
         variants=("b0", "b1", "b2", "b3", "l1", "l2", "l3"), weights="efficientvit_{v}_r224.pt"),
    dict(folder="efficientvit_msra", type="EfficientViTMSRA", prefix="efficientvit-msra",
         title="EfficientViT (MSRA)", variants=("m0", "m1", "m2", "m3", "m4", "m5"), weights="efficientvit_{v}.pth"),
    dict(folder="edgevit", type="EdgeViT", prefix="edgevit", title="EdgeViT", variants=("xxs", "xs", "s"),
         weights=None),
    dict(folder="efficientformer", type="EfficientFormerV1", prefix="efficientformer", title="EfficientFormer",
         variants=("l1", "l3", "l7"), weights="efficientformer_{v}_300d.pth"),
    dict(folder="efficientformer", type="EfficientFormerV2", prefix="efficientformerv2", title="EfficientFormerV2",
         variants=("s0", "s1", "s2", "l"), weights="eformer_{v}_450.pth"),
]
LVIS_VARIANTS = {"EfficientViTMIT": "b1", "EfficientViTMSRA": "m4", "EdgeViT": "xs", "EfficientFormerV1": "l1",
                 "EfficientFormerV2": "s2"}

STANDARD_RECIPE = ("mmdet's standard AdamW 1x recipe for transformer backbones (as mmdet's Swin-T Mask R-CNN 1x: "
                   "AdamW lr 1e-4, wd 0.05, no decay on norms and attention-bias tables, 1000-iter linear warm-up, "
                   "12 epochs, lr x0.1 at epochs 8 and 11, 16 images per batch); no official recipe exists for "
                   "this model")
PUBLISHED = {
    ("EfficientViTMSRA", "m4", "retinanet", "coco"):
        "box AP 32.7 (AP50 52.2, AP75 34.1), ImageNet-1k weights (microsoft/Cream EfficientViT/downstream README)",
    ("EfficientViTMSRA", "m4", "mask-rcnn", "coco"):
        "mask AP 31.0 (AP50 51.2, AP75 32.2), ImageNet-1k weights (microsoft/Cream EfficientViT/downstream README; "
        "box AP not given)",
}
EF_NOT_PUBLISHED = ("none published with the official code (snap-research/EfficientFormer detection/README has no "
                    "results; the papers' COCO tables are not quoted here because they could not be checked)")

WIDTH = 116


def comment(text: str) -> str:
    """``text`` as ``#`` comment lines wrapped at the line width (continuation lines indented)."""
    return "\n".join(textwrap.wrap(text, WIDTH, initial_indent="# ", subsequent_indent="#   ",
                                    break_on_hyphens=False, break_long_words=False))


def fmt(v) -> str:
    """Python literal of a config value, dicts as dict(...) calls."""
    if isinstance(v, dict):
        return "dict(" + ", ".join(f"{k}={fmt(x)}" for k, x in v.items()) + ")"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(fmt(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def field(name: str, value: dict, indent: int = 4) -> str:
    """``name=dict(...),`` on one line, or one key per line when that is too long."""
    pad = " " * indent
    line = f"{pad}{name}={fmt(value)},"
    if len(line) <= WIDTH + 4:
        return line
    inner = "\n".join(f"{pad}    {k}={fmt(v)}," for k, v in value.items())
    return f"{pad}{name}=dict(\n{inner[:-1]}),"


def backbone_out_channels(bb_type: str, arch: str, out_indices) -> List[int]:
    """``out_channels`` of the registered backbone (built on the meta device: no memory, no init cost)."""
    import torch

    import effvit_plugins  # noqa: F401  (registration)
    from effvit_plugins.registry import MODELS

    with torch.device("meta"):
        model = MODELS.get(bb_type)(arch=arch, out_indices=out_indices)
    return [int(c) for c in model.out_channels]


def backbone_cfg(fam: dict, v: str, detector: str) -> dict:
    t = fam["type"]
    if t == "EfficientViTMSRA":
        idx = (0, 1, 2)  # strides 16/32/64; the upsampling neck makes the finer levels
    elif t == "EfficientViTMIT":
        idx = (1, 2, 3, 4) if detector == "mask-rcnn" else (2, 3, 4)
    else:
        idx = (0, 1, 2, 3) if detector == "mask-rcnn" else (1, 2, 3)
    bb = dict(type=t, arch=v, out_indices=idx)
    if t.startswith("EfficientFormer"):
        # official dense code: BN statistics are trained, V1 keeps its GroupNorm output norms (the default)
        bb["seg_resolution"] = EF_DET_SEG_RESOLUTION[int(t[-1])]
        if v in EF_DET_DROP_PATH:
            bb["drop_path_rate"] = EF_DET_DROP_PATH[v]
        if v in EF_DET_LAYER_SCALE:
            bb["layer_scale_init_value"] = EF_DET_LAYER_SCALE[v]
    else:
        # BatchNorm statistics stay at their ImageNet values (2 images per GPU): the official MSRA downstream
        # backbone always does this, and it is mmdet's convention for BN backbones
        bb["norm_eval"] = True
    return bb


def neck_cfg(fam: dict, bb: dict, detector: str) -> dict:
    """The neck's in_channels (the rest is in the model base: FPN, or for EfficientViT-MSRA the upsampling FPN)."""
    return dict(in_channels=backbone_out_channels(bb["type"], bb["arch"], bb["out_indices"]))


def model_base(fam: dict, detector: str) -> str:
    return detector + ("_efficientvit-msra-upfpn" if fam["type"] == "EfficientViTMSRA" else "_fpn")


def recipe(fam: dict, v: str, detector: str, dataset: str):
    """(header text, schedule base under configs/_base_/mmdet/schedules/) of the optimiser / schedule."""
    t = fam["type"]
    lvis_note = "; no official LVIS recipe exists, this is the COCO one with mmdet's LVIS v1 data settings " \
                "(mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1)" if dataset == "lvis" else ""
    if t == "EfficientViTMSRA" and v == MSRA_OFFICIAL:
        src = {"retinanet": "retinanet", "mask-rcnn": "mask_rcnn"}[detector]
        text = (f"official (microsoft/Cream EfficientViT/downstream/configs/{src}_efficientvit_m4_fpn_1x_coco.py): "
                "AdamW lr 1e-4, wd 0.05, no weight decay on attention_biases, 12 epochs, lr x0.1 at epochs 8 and "
                "11, 500-iter linear warm-up from 0.001, 8 GPUs x 2 images" + lvis_note)
        return text, "efficientvit-msra_adamw_1x"
    if t.startswith("EfficientFormer") and (detector == "mask-rcnn"):
        ver = int(t[-1])
        name = f"efficientformer{'_' if ver == 1 else 'v2_'}{v}"
        text = (f"official (snap-research/EfficientFormer detection/configs/mask_rcnn_{name}_fpn_1x_coco.py): "
                f"AdamW lr 2e-4, wd {1e-4 if ver == 1 else 0.05:g}, 12 epochs, lr x0.1 at epochs 8 and 11, 500-iter "
                "linear warm-up from 1e-6, 8 GPUs x 2 images" + lvis_note)
        return text, "efficientformer_adamw_1x" if ver == 1 else "efficientformerv2_adamw_1x"
    return STANDARD_RECIPE + lvis_note, "adamw_1x"


def published(fam: dict, v: str, detector: str, dataset: str) -> str:
    key = (fam["type"], v, detector, dataset)
    if key in PUBLISHED:
        return PUBLISHED[key]
    if fam["type"].startswith("EfficientFormer") and detector == "mask-rcnn" and dataset == "coco":
        return EF_NOT_PUBLISHED
    return "none published"


def config_name(fam: dict, v: str, detector: str, dataset: str) -> str:
    neck = "upfpn" if fam["type"] == "EfficientViTMSRA" else "fpn"
    tail = "8xb2-1x_coco" if dataset == "coco" else "sample1e-3_8xb2-ms-1x_lvis-v1"
    return f"{detector}_{fam['prefix']}-{v}_{neck}_{tail}.py"


def render(fam: dict, v: str, detector: str, dataset: str) -> str:
    bb = backbone_cfg(fam, v, detector)
    neck = neck_cfg(fam, bb, detector)
    det_title = {"retinanet": "RetinaNet", "mask-rcnn": "Mask R-CNN"}[detector]
    neck_title = ("EfficientViTMSRAFPN (the official upsampling FPN, strides "
                  + ("8-128)" if detector == "retinanet" else "4-64)")) if fam["type"] == "EfficientViTMSRA" \
        else "FPN"
    data_title = "COCO 2017, 1333x800" if dataset == "coco" else \
        "LVIS v1 (1203 classes, class-balanced repeat sampling 1e-3, multi-scale 640-800)"
    what = f"{det_title} 1x, {fam['title']} {v.upper()} + {neck_title}, {data_title}."
    rec_text, schedule = recipe(fam, v, detector, dataset)
    if fam["weights"]:
        w = fam["weights"].format(v=v)
        weights = comment(f"ImageNet weights (recommended; the official file, converted on load): tools/train.py CONFIG "
                          f"--cfg-options model.backbone.init_cfg.type=Pretrained "
                          f"model.backbone.init_cfg.checkpoint={w}")
    else:
        weights = comment("ImageNet weights: none were released for EdgeViT (without init_cfg the backbone trains "
                          "from scratch).")
    text = "\n".join([comment(what), comment(f"Recipe: {rec_text}."),
                      comment(f"Published: {published(fam, v, detector, dataset)}."), weights,
                      "# Generated by scripts/gen_det_configs.py.", ""])
    data_base = {"retinanet": "coco_detection", "mask-rcnn": "coco_instance"}[detector] if dataset == "coco" \
        else "lvis_v1_instance"
    text += ("_base_ = [\n"
             f"    '../_base_/mmdet/models/{model_base(fam, detector)}.py',\n"
             f"    '../_base_/mmdet/datasets/{data_base}.py',\n"
             f"    '../_base_/mmdet/schedules/{schedule}.py',\n"
             "    '../_base_/mmdet/default_runtime.py',\n"
             "]\n")
    model_lines = ["model = dict(", field("backbone", bb), field("neck", neck)]
    if dataset == "lvis":
        model_lines += [
            "    roi_head=dict(bbox_head=dict(num_classes=1203), mask_head=dict(num_classes=1203)),",
            "    # LVIS: up to 300 detections per image, kept down to a very low score",
            "    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300)),",
        ]
    model_lines[-1] = model_lines[-1].rstrip(",") + ")"
    text += "\n".join(model_lines) + "\n"
    return text


# The demo configs (configs/demo/, `make demo-det`): the COCO configs of one small variant scaled down to train
# from scratch on the generated COCO-layout demo set on a CPU in a few minutes.
DEMO_BACKBONE = ("EdgeViT", "xxs")
DEMO_WIDTH = 64  # channels of the neck and heads (COCO configs: 256)
DEMO_ITERS = 300


def demo_model_overrides(detector: str, width: int = DEMO_WIDTH) -> List[str]:
    """``model = dict(...)`` lines narrowing the heads to ``width`` channels and 3 classes, with fewer proposals."""
    if detector == "retinanet":
        return [
            "    # GroupNorm in the head: without ImageNet weights the plain head needs far more iterations",
            f"    bbox_head=dict(in_channels={width}, feat_channels={width}, num_classes=3,",
            "                   norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),",
            "    test_cfg=dict(max_per_img=20))",
        ]
    return [
        f"    rpn_head=dict(in_channels={width}, feat_channels={width}),",
        "    roi_head=dict(",
        f"        bbox_roi_extractor=dict(out_channels={width}),",
        f"        bbox_head=dict(in_channels={width}, fc_out_channels=256, num_classes=3),",
        f"        mask_roi_extractor=dict(out_channels={width}),",
        f"        mask_head=dict(in_channels={width}, conv_out_channels={width}, num_classes=3)),",
        "    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200), rcnn=dict(sampler=dict(num=128))),",
        "    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=200), rcnn=dict(max_per_img=20)))",
    ]


def demo_config_name(detector: str) -> str:
    fam = next(f for f in FAMILIES if f["type"] == DEMO_BACKBONE[0])
    return f"{detector}_{fam['prefix']}-{DEMO_BACKBONE[1]}_fpn_1xb4-{DEMO_ITERS}iter_coco-demo-128x128.py"


def render_demo(detector: str) -> str:
    fam = next(f for f in FAMILIES if f["type"] == DEMO_BACKBONE[0])
    v = DEMO_BACKBONE[1]
    bb = dict(backbone_cfg(fam, v, detector), norm_eval=False)
    neck = dict(neck_cfg(fam, bb, detector), out_channels=DEMO_WIDTH)
    det_title = {"retinanet": "RetinaNet", "mask-rcnn": "Mask R-CNN"}[detector]
    text = "\n".join([
        comment(f"{det_title} with an {fam['title']} {v.upper()} backbone, trained from scratch on the synthetic "
                "COCO-layout demo set (tools/generate_demo_data.py --dataset coco -> data/coco_demo/; circles, "
                "squares and triangles as 'sports ball', 'tv' and 'kite') on a CPU in a few minutes."),
        comment(f"The COCO config ({config_name(fam, v, detector, 'coco')}) scaled down: 128x128 images, the three "
                f"classes, {DEMO_WIDTH}-channel neck and heads"
                + (" (GroupNorm in the head)" if detector == "retinanet" else "")
                + f", fewer proposals, BatchNorm statistics trained (no ImageNet weights), {DEMO_ITERS} iterations of "
                "AdamW lr 1e-3, evaluation and checkpoint at the end."),
        comment("`make demo-det` runs the Mask R-CNN one (scripts/demo_det.sh)." if detector == "mask-rcnn" else
                "Train / test it like the Mask R-CNN demo: tools/train.py CONFIG, tools/test.py CONFIG CHECKPOINT."),
        "# Generated by scripts/gen_det_configs.py.", ""])
    text += ("_base_ = [\n"
             f"    '../_base_/mmdet/models/{model_base(fam, detector)}.py',\n"
             "    '../_base_/mmdet/datasets/coco_demo_128x128.py',\n"
             "    '../_base_/mmdet/schedules/demo_300iter.py',\n"
             "    '../_base_/mmdet/default_runtime.py',\n"
             "]\n")
    text += "\n".join(["model = dict(", field("backbone", bb), field("neck", neck)]
                      + demo_model_overrides(detector)) + "\n"
    if detector == "retinanet":
        text += "val_evaluator = dict(metric='bbox')\ntest_evaluator = dict(metric='bbox')\n"
    text += ("default_hooks = dict(\n"
             "    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),\n"
             "    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000000, save_last=True, "
             "max_keep_ckpts=1))\n"
             "log_processor = dict(by_epoch=False, window_size=10)\n")
    return text


def configs() -> Dict[str, dict]:
    """relative path -> dict(text, family, variant, detector, dataset, published)."""
    out = {}
    for fam in FAMILIES:
        for v in fam["variants"]:
            jobs = [("retinanet", "coco"), ("mask-rcnn", "coco")]
            if LVIS_VARIANTS.get(fam["type"]) == v:
                jobs.append(("mask-rcnn", "lvis"))
            for detector, dataset in jobs:
                rel = os.path.join("configs", fam["folder"], config_name(fam, v, detector, dataset))
                out[rel] = dict(text=render(fam, v, detector, dataset), family=fam, variant=v, detector=detector,
                                dataset=dataset, published=published(fam, v, detector, dataset))
    for detector in ("mask-rcnn", "retinanet"):
        out[os.path.join("configs", "demo", demo_config_name(detector))] = dict(text=render_demo(detector), demo=True)
    return out


def table(cfgs: Dict[str, dict], complexity: bool = True) -> str:
    """The README table: every config with its published result, and backbone + neck params / MACs at 800x1333
    (counted by tools/get_flops.py on the meta device)."""
    import importlib.util

    from mmengine.config import Config

    spec = importlib.util.spec_from_file_location("_get_flops", os.path.join(ROOT, "tools", "get_flops.py"))
    get_flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(get_flops)
    rows: Dict[tuple, dict] = {}
    for rel, c in cfgs.items():
        if c.get("demo"):
            continue
        rows.setdefault((c["family"]["title"], c["variant"]), {})[(c["detector"], c["dataset"])] = (rel, c)

    def cell(entry: Optional[tuple]) -> str:
        if entry is None:
            return "—"
        rel, c = entry
        pub = c["published"]
        short = pub.split(" (")[0].split(",")[0] if not pub.startswith("none") else "none published"
        text = f"[`{os.path.basename(rel)}`]({rel})<br>{short}"
        if complexity:
            r = get_flops.detector_complexity(Config.fromfile(os.path.join(ROOT, rel)), (800, 1333))
            text += f"<br>{r['params'] / 1e6:.1f}M / {r['macs'] / 1e9:.1f}G"
        return text

    lines = ["| backbone | RetinaNet 1x, COCO | Mask R-CNN 1x, COCO | Mask R-CNN 1x, LVIS v1 |", "|---|---|---|---|"]
    for (title, v), cells in rows.items():
        lines.append(f"| {title} {v.upper()} | {cell(cells.get(('retinanet', 'coco')))} | "
                     f"{cell(cells.get(('mask-rcnn', 'coco')))} | {cell(cells.get(('mask-rcnn', 'lvis')))} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", action="store_true", help="print the README table instead of writing configs "
                   "(with backbone + neck params / MACs at 800x1333 unless --no-complexity)")
    p.add_argument("--no-complexity", action="store_true", help="--table without the params / MACs")
    p.add_argument("--check", action="store_true", help="only compare with the committed configs")
    args = p.parse_args(argv)
    cfgs = configs()
    if args.table:
        print(table(cfgs, complexity=not args.no_complexity))
        return 0
    stale = []
    for rel, c in cfgs.items():
        path = os.path.join(ROOT, rel)
        old = open(path).read() if os.path.isfile(path) else None
        if old == c["text"]:
            continue
        stale.append(rel)
        if not args.check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(c["text"])
            print(rel)
    if args.check and stale:
        print("out of date (run python scripts/gen_det_configs.py):\n  " + "\n  ".join(stale))
        return 1
    print(f"{len(cfgs)} detection configs, {len(stale)} {'differ' if args.check else 'written'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
