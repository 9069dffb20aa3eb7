"""Detectron2 configs under ``configs/detectron2/``.

* yacs (``tools/train_net.py --config-file``), each on one of the hand-written ``Base-EffViT-*.yaml``: COCO Mask
  R-CNN 1x and RetinaNet 1x for every variant, LVIS v1 Mask R-CNN and Cityscapes Semantic FPN for
  ``spec.det_variant``.
* LazyConfig (Detectron2's ``tools/lazyconfig_train_net.py``): the COCO Mask R-CNN configs
  (``LazyConfigs/COCO-InstanceSegmentation/``, on the hand-written ``LazyConfigs/common/mask_rcnn_effvit_fpn.py``).

Backbone options: the official dense backbones' (``spec.dense_backbone_kwargs``). Recipes: the family's official
one (``spec.official_recipes``: optimiser, weight decay, warm-up) where it exists, else the Base file's. Schedules
are Detectron2's (1x = 90k iterations of 16 images, lr x0.1 at 60k and 80k).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Iterator, List, Optional

from .common import Generated, figures_of, header, official_recipe, optimizer_summary, published_rows, published_text

OUT = "configs/detectron2"


@dataclasses.dataclass(frozen=True)
class D2Task:
    key: str
    folder: str
    base: str  # the hand-written Base file
    name: str  # file-name pattern
    title: str
    dataset: str
    min_stride: int  # the finest backbone map it reads
    builder: str  # MODEL.BACKBONE.NAME = build_<family key><builder>_backbone
    recipe: Optional[str] = None  # the task of spec.official_recipes it follows
    det_title: str = ""  # the detector as published_results.json names it ("RetinaNet + ..., 1x")
    one_per_family: bool = False  # only for spec.det_variant
    dense_task: str = "det"
    note: str = ""  # appended to the recipe text


TASKS = (
    D2Task("mask_rcnn", "COCO-InstanceSegmentation", "Base-EffViT-MaskRCNN-FPN.yaml", "mask_rcnn_{name}_{neck}_1x",
           "Mask R-CNN 1x, COCO 2017", "coco", 4, "_fpn", recipe="mask-rcnn", det_title="Mask R-CNN"),
    D2Task("retinanet", "COCO-Detection", "Base-EffViT-RetinaNet.yaml", "retinanet_{name}_{neck}_1x",
           "RetinaNet 1x, COCO 2017", "coco", 8, "_retinanet_fpn", recipe="retinanet", det_title="RetinaNet"),
    D2Task("lvis", "LVISv1-InstanceSegmentation", "Base-EffViT-LVIS-MaskRCNN-FPN.yaml", "mask_rcnn_{name}_{neck}_1x",
           "Mask R-CNN, LVIS v1 (repeat-factor sampling 1e-3, federated sigmoid loss, 180k iterations)", "lvis", 4,
           "_fpn", recipe="mask-rcnn", one_per_family=True,
           note="; no official LVIS recipe exists, this is the COCO one on Detectron2's LVIS v1 settings"),
    D2Task("semseg", "Cityscapes-SemanticSegmentation", "Base-EffViT-SemanticFPN.yaml", "semantic_{name}_{neck}_40k",
           "Semantic FPN, Cityscapes 512x1024 crops, 40k iterations", "cityscapes", 4, "_fpn", one_per_family=True,
           dense_task="seg"),
)
STANDARD_RECIPE = ("the Base file's: AdamW lr 1e-4, weight decay 0.05 without decay on norm layers and "
                   "attention-bias tables, 1000-iteration linear warm-up; no official recipe exists for this model")
SEMSEG_RECIPE = "the Base file's (the default Semantic FPN optimiser and schedule of the mmseg configs)"
SCHEDULE = "12 epochs with lr x0.1 after 8 and 11 (here Detectron2's 1x)"


def neck_token(spec) -> str:
    return "upfpn" if spec.upsample_neck else "fpn"


def yaml_path(spec, variant: str, task: D2Task) -> str:
    name = task.name.format(name=f"{spec.d2_token}_{variant}", neck=neck_token(spec))
    return f"{OUT}/{task.folder}/{name}.yaml"


def lazy_path(spec, variant: str) -> str:
    return f"{OUT}/LazyConfigs/COCO-InstanceSegmentation/mask_rcnn_{spec.d2_token}_{variant}_{neck_token(spec)}_1x.py"


def out_features(spec, min_stride: int) -> List[str]:
    return [f"res{int(math.log2(spec.feature_strides[i]))}" for i in spec.dense_indices(min_stride)]


def backbone_options(spec, variant: str, task: D2Task) -> Dict[str, object]:
    """MODEL.EFFVIT options (upper case) = the backbone's keyword arguments (lower case)."""
    opts: Dict[str, object] = {"OUT_FEATURES": out_features(spec, task.min_stride)}
    opts.update({k.upper(): v for k, v in spec.dense_backbone_kwargs(variant, task.dense_task).items()})
    return opts


def recipe(spec, variant: str, task: D2Task):
    """(header text, SOLVER overrides)."""
    r = official_recipe(spec, task.recipe, variant) if task.recipe else None
    if r is None:
        return (SEMSEG_RECIPE if task.key == "semseg" else STANDARD_RECIPE + task.note), {}
    no_decay_bias = "attention_biases" in r.no_decay
    return (f"official ({r.source_of(variant)}): {optimizer_summary(r)}, {SCHEDULE}" + task.note,
            dict(BASE_LR=r.lr, WEIGHT_DECAY=r.weight_decay, WEIGHT_DECAY_NORM=r.weight_decay,
                 WEIGHT_DECAY_ATTN_BIAS=0.0 if no_decay_bias else r.weight_decay, WARMUP_ITERS=r.warmup_iters,
                 WARMUP_FACTOR=r.warmup_factor))


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


def weights_text(spec, variant: str) -> str:
    w = spec.weights_file(variant)
    if w is None:
        return (f"ImageNet weights: none were released for {spec.title} (without MODEL.WEIGHTS the backbone trains "
                f"from scratch).")
    return (f"ImageNet weights (recommended): MODEL.WEIGHTS {w} (the official file; tools/train_net.py converts it "
            f"on load).")


def render(spec, variant: str, task: D2Task, figs) -> str:
    neck = (f"the upsampling FPN (strides {task.min_stride}-{task.min_stride * 16})" if spec.upsample_neck
            else "FPN")
    rec_text, solver = recipe(spec, variant, task)
    text = header(f"{task.title}; {spec.title} {variant.upper()} + {neck}.", f"Recipe: {rec_text}.",
                  f"Published: {published_text(figs)}.", weights_text(spec, variant))
    model: Dict[str, object] = {"BACKBONE": {"NAME": f"build_{spec.key}{task.builder}_backbone"},
                                "EFFVIT": {"FAMILY": spec.key, "ARCH": variant,
                                           **backbone_options(spec, variant, task)}}
    if spec.upsample_neck:
        model["FPN"] = {"IN_FEATURES": out_features(spec, task.min_stride)}
    tree: Dict[str, object] = {"MODEL": model}
    if solver:
        tree["SOLVER"] = solver
    return text + "\n".join([f'_BASE_: "../{task.base}"'] + yaml_block(tree)) + "\n"


def py_value(v) -> str:
    return repr(list(v)) if isinstance(v, tuple) else repr(v)


def render_lazy(spec, variant: str) -> str:
    task = TASKS[0]
    kw = {"arch": variant, "out_features": out_features(spec, task.min_stride),
          **spec.dense_backbone_kwargs(variant, task.dense_task)}

    def call(cls: str, indent: str) -> str:
        """``L(cls)(k=v, ...)``, one argument per line."""
        inner = "".join(f"\n{indent}    {k}={py_value(val)}," for k, val in kw.items())
        return f"L({cls})({inner}\n{indent})"

    rec_text, solver = recipe(spec, variant, task)
    yaml_rel = "../" + yaml_path(spec, variant, task)[len(OUT) + 1:]
    text = header(f"LazyConfig of {yaml_rel} (for Detectron2's tools/lazyconfig_train_net.py): Mask R-CNN 1x, "
                  f"COCO 2017; {spec.title} {variant.upper()}.", f"Recipe: {rec_text}.",
                  "ImageNet weights: train.init_checkpoint=<file written by tools/convert_checkpoint.py OFFICIAL OUT "
                  "--to detectron2>." if spec.weights_file(variant) else "ImageNet weights: none were released.")
    lines = ["from detectron2.config import LazyCall as L",
             "",
             f"from effvit_plugins.detectron2 import {spec.d2_name}" + (", UpsampleFPNBackbone" if spec.upsample_neck
                                                                         else ""),
             "",
             "from ..common.mask_rcnn_effvit_fpn import dataloader, lr_multiplier, model, optimizer, train",
             ""]
    if spec.upsample_neck:
        strides = "/".join(str(spec.feature_strides[i]) for i in spec.dense_indices(task.min_stride))
        lines += [f"# strides {strides} -> P2-P6 by the upsampling FPN (transposed-conv levels down to stride 4)",
                  "model.backbone = L(UpsampleFPNBackbone)(",
                  f"    bottom_up={call(spec.d2_name, '    ')},",
                  '    in_features="${.bottom_up.out_features}",',
                  "    out_channels=256,",
                  "    finest_stride=4,",
                  ")"]
    else:
        lines += [f"model.backbone.bottom_up = {call(spec.d2_name, '')}"]
    if solver:
        lines += [f"optimizer.lr = {solver['BASE_LR']!r}",
                  f"optimizer.weight_decay = {solver['WEIGHT_DECAY']!r}",
                  f"optimizer.params.weight_decay_norm = {solver['WEIGHT_DECAY_NORM']!r}",
                  "optimizer.params.overrides = {name: {\"weight_decay\": "
                  f"{solver['WEIGHT_DECAY_ATTN_BIAS']!r}" "} for name in (\"attention_biases\", "
                  "\"attention_biases_seg\")}",
                  f"lr_multiplier.warmup_length = {solver['WARMUP_ITERS']} / train.max_iter",
                  f"lr_multiplier.warmup_factor = {solver['WARMUP_FACTOR']!r}"]
    return text + "\n".join(lines) + "\n"


def generate(spec) -> Iterator[Generated]:
    for v in spec.variants:
        for task in TASKS:
            if task.one_per_family and v != spec.det_variant:
                continue
            figs = []
            if task.det_title:
                rows = [r for r in published_rows("detection", spec, v, dataset="coco")
                        if r.get("detector", "").startswith(task.det_title + " ")]
                figs = figures_of(rows, ("box_AP", "mask_AP"))
            yield Generated(yaml_path(spec, v, task), render(spec, v, task, figs), spec, v, f"d2-{task.key}",
                            task.dataset, "detectron2", figs)
        yield Generated(lazy_path(spec, v), render_lazy(spec, v), spec, v, "d2-lazy-mask_rcnn", "coco", "detectron2")
