"""Detectron2 configs under ``configs/detectron2/``.

* yacs (``tools/train_net.py --config-file``), each on one of the hand-written ``Base-EffViT-*.yaml``: COCO Mask
  R-CNN 1x and RetinaNet 1x for every variant, LVIS v1 Mask R-CNN and Cityscapes Semantic FPN for
  ``spec.det_variant``.
* LazyConfig (Detectron2's ``tools/lazyconfig_train_net.py``): the twin of every yacs config, the same model,
  recipe, data and schedule, under ``LazyConfigs/`` with the same folder and file names (``.py``), each on the
  hand-written base of its task in ``LazyConfigs/common/`` (``D2Task.lazy_common``, the counterpart of its
  ``Base-EffViT-*.yaml``).

Backbone options: the official dense backbones' (``spec.dense_backbone_kwargs``). Recipes: the family's official
one (``spec.official_recipes``: optimiser, weight decay, warm-up) where it exists, else the Base file's. Schedules
are Detectron2's (1x = 90k iterations of 16 images, lr x0.1 at 60k and 80k).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Iterator, List, Optional

from .common import (Generated, figures_of, header, official_recipe, optimizer_summary, out_channels, published_rows,
                     published_text)

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
    lazy_common: str = ""  # the hand-written LazyConfig base: LazyConfigs/common/<lazy_common>.py

    @property
    def p6p7(self) -> bool:
        """RetinaNet's FPN: P3-P7, the two coarsest levels from stride-2 convs (else P2-P6, P6 by max pooling)."""
        return self.builder == "_retinanet_fpn"


TASKS = (
    D2Task("mask_rcnn", "COCO-InstanceSegmentation", "Base-EffViT-MaskRCNN-FPN.yaml", "mask_rcnn_{name}_{neck}_1x",
           "Mask R-CNN 1x, COCO 2017", "coco", 4, "_fpn", recipe="mask-rcnn", det_title="Mask R-CNN",
           lazy_common="mask_rcnn_effvit_fpn"),
    D2Task("retinanet", "COCO-Detection", "Base-EffViT-RetinaNet.yaml", "retinanet_{name}_{neck}_1x",
           "RetinaNet 1x, COCO 2017", "coco", 8, "_retinanet_fpn", recipe="retinanet", det_title="RetinaNet",
           lazy_common="retinanet_effvit_fpn"),
    D2Task("lvis", "LVISv1-InstanceSegmentation", "Base-EffViT-LVIS-MaskRCNN-FPN.yaml", "mask_rcnn_{name}_{neck}_1x",
           "Mask R-CNN, LVIS v1 (repeat-factor sampling 1e-3, federated sigmoid loss, 180k iterations)", "lvis", 4,
           "_fpn", recipe="mask-rcnn", one_per_family=True,
           note="; no official LVIS recipe exists, this is the COCO one on Detectron2's LVIS v1 settings",
           lazy_common="lvis_mask_rcnn_effvit_fpn"),
    D2Task("semseg", "Cityscapes-SemanticSegmentation", "Base-EffViT-SemanticFPN.yaml", "semantic_{name}_{neck}_40k",
           "Semantic FPN, Cityscapes 512x1024 crops, 40k iterations", "cityscapes", 4, "_fpn", one_per_family=True,
           dense_task="seg", lazy_common="semantic_effvit_fpn"),
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


def lazy_path(spec, variant: str, task: D2Task) -> str:
    """The LazyConfig twin of :func:`yaml_path`: the same folder and name under ``LazyConfigs/``, ``.py``."""
    name = task.name.format(name=f"{spec.d2_token}_{variant}", neck=neck_token(spec))
    return f"{OUT}/LazyConfigs/{task.folder}/{name}.py"


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


def render_lazy(spec, variant: str, task: D2Task) -> str:
    """The LazyConfig twin of :func:`render`: the task's common base with this backbone (and neck, where the family
    has the upsampling FPN) and the same recipe overrides as the yaml file's ``SOLVER``."""
    feats = out_features(spec, task.min_stride)
    kw = {"arch": variant, "out_features": feats, **spec.dense_backbone_kwargs(variant, task.dense_task)}

    def call(cls: str, indent: str) -> str:
        """``L(cls)(k=v, ...)``, one argument per line."""
        inner = "".join(f"\n{indent}    {k}={py_value(val)}," for k, val in kw.items())
        return f"L({cls})({inner}\n{indent})"

    rec_text, solver = recipe(spec, variant, task)
    yaml_rel = "../" + yaml_path(spec, variant, task)[len(OUT) + 1:]
    text = header(f"LazyConfig of {yaml_rel} (for Detectron2's tools/lazyconfig_train_net.py): {task.title}; "
                  f"{spec.title} {variant.upper()}.", f"Recipe: {rec_text}.",
                  "ImageNet weights: train.init_checkpoint=<file written by tools/convert_checkpoint.py OFFICIAL OUT "
                  "--to detectron2>." if spec.weights_file(variant) else "ImageNet weights: none were released.")
    lines = ["from detectron2.config import LazyCall as L",
             "",
             f"from effvit_plugins.detectron2 import {spec.d2_name}" + (", UpsampleFPNBackbone" if spec.upsample_neck
                                                                         else ""),
             "",
             f"from ..common.{task.lazy_common} import dataloader, lr_multiplier, model, optimizer, train",
             ""]
    if spec.upsample_neck:
        strides = [spec.feature_strides[i] for i in spec.dense_indices(task.min_stride)]
        finest, extra = task.min_stride, 1 if task.p6p7 else 0
        coarsest = strides[-1] * 2 ** extra
        levels = f"P{int(math.log2(finest))}-P{int(math.log2(coarsest))}"
        how = f"transposed-conv levels down to stride {finest}" + (
            f", P{int(math.log2(coarsest))} by a stride-2 conv" if extra else "")
        lines += [f"# strides {'/'.join(map(str, strides))} -> {levels} by the upsampling FPN ({how})",
                  "model.backbone = L(UpsampleFPNBackbone)(",
                  f"    bottom_up={call(spec.d2_name, '    ')},",
                  '    in_features="${.bottom_up.out_features}",',
                  "    out_channels=256,",
                  f"    finest_stride={finest},"]
        lines += ["    num_extra_convs=1,"] if extra else []
        lines += [")"]
    else:
        lines += [f"model.backbone.bottom_up = {call(spec.d2_name, '')}"]
        if task.p6p7:
            channels = out_channels(spec, variant, spec.dense_indices(task.min_stride))[-1]
            lines += [f"# P6 and P7: stride-2 convs on {feats[-1]} ({channels} channels)",
                      f"model.backbone.top_block.in_feature = {feats[-1]!r}",
                      f"model.backbone.top_block.in_channels = {channels}"]
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
            yield Generated(lazy_path(spec, v, task), render_lazy(spec, v, task), spec, v, f"d2-lazy-{task.key}",
                            task.dataset, "detectron2", figs)
