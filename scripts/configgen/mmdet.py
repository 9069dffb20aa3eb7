"""mmdet 3.x configs: RetinaNet 1x and Mask R-CNN 1x on COCO 2017 for every variant, Mask R-CNN on LVIS v1 for
``spec.det_variant``.

* Backbone maps: every map of stride >= the detector's finest level (``spec.dense_indices``); channels read from
  the core backbone itself. Families with ``spec.upsample_neck`` use the upsampling FPN model bases
  (``configs/_base_/mmdet/models/*_upfpn.py``).
* Backbone options: the official dense backbones' (``spec.dense_backbone_kwargs(variant, 'det')``).
* Recipe: the family's official one where ``spec.official_recipes`` has it (written into the config), else
  mmdet's standard AdamW 1x recipe for transformer backbones (``configs/_base_/mmdet/schedules/adamw_1x.py``).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

from .common import (Generated, bases, figures_of, fmt, header, model_block, official_recipe, optimizer_summary,
                     out_channels, published_rows, published_text)


@dataclasses.dataclass(frozen=True)
class DetKind:
    key: str  # config-name token and the task of spec.official_recipes
    title: str
    min_stride: int  # the finest backbone map it reads
    strides: str  # strides of its levels
    coco_data: str  # dataset base under configs/_base_/mmdet/datasets/
    lvis: bool  # also an LVIS v1 config for spec.det_variant


KINDS = (
    DetKind("retinanet", "RetinaNet", 8, "8-128", "coco_detection", lvis=False),
    DetKind("mask-rcnn", "Mask R-CNN", 4, "4-64", "coco_instance", lvis=True),
)
DATASETS = {
    "coco": dict(tail="8xb2-1x_coco", title="COCO 2017, 1333x800"),
    "lvis": dict(tail="sample1e-3_8xb2-ms-1x_lvis-v1", base="lvis_v1_instance",
                 title="LVIS v1 (1203 classes, class-balanced repeat sampling 1e-3, multi-scale 640-800)"),
}
STANDARD_RECIPE = ("mmdet's standard AdamW 1x recipe for transformer backbones (as mmdet's Swin-T Mask R-CNN 1x: "
                   "AdamW lr 1e-4, wd 0.05, no decay on norms and attention-bias tables, 1000-iter linear warm-up, "
                   "12 epochs, lr x0.1 at epochs 8 and 11, 16 images per batch); no official recipe exists for "
                   "this model")
LVIS_NOTE = ("; no official LVIS recipe exists, this is the COCO one with mmdet's LVIS v1 data settings "
             "(mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1)")
SCHEDULE_1X = "12 epochs, lr x0.1 at epochs 8 and 11, 8 GPUs x 2 images"
# the figures of a detection row of published_results.json (matched to its config by the row's "config")
PUBLISHED_METRICS = ("box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75")


def neck_token(spec) -> str:
    return "upfpn" if spec.upsample_neck else "fpn"


def config_path(spec, variant: str, kind: DetKind, dataset: str) -> str:
    return (f"configs/{spec.config_folder}/{kind.key}_{spec.config_prefix}-{variant}_{neck_token(spec)}_"
            f"{DATASETS[dataset]['tail']}.py")


def backbone_and_neck(spec, variant: str, kind: DetKind):
    """The backbone dict and the neck's in_channels (the rest of the neck is in the model base)."""
    idx = spec.dense_indices(kind.min_stride)
    backbone = dict(type=spec.name, arch=variant, out_indices=idx, **spec.dense_backbone_kwargs(variant, "det"))
    return backbone, dict(in_channels=out_channels(spec, variant, idx))


def recipe_lines(recipe) -> str:
    """The official recipe written into the config (on the adamw_1x schedule base)."""
    sched = []
    if recipe.warmup_iters:
        sched.append(f"    dict(type='LinearLR', start_factor={recipe.warmup_factor!r}, by_epoch=False, begin=0, "
                     f"end={recipe.warmup_iters}),")
    sched.append("    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),")
    optim = [f"    optimizer=dict(type='AdamW', lr={recipe.lr!r}, betas=(0.9, 0.999), "
             f"weight_decay={recipe.weight_decay!r}),"]
    if recipe.no_decay:
        keys = {k: dict(decay_mult=0.0) for k in recipe.no_decay}
        optim.append(f"    paramwise_cfg=dict(custom_keys={fmt(keys)}),")
    optim[-1] = optim[-1].rstrip(",") + ")"
    return ("# the official recipe (see the header)\nparam_scheduler = [\n" + "\n".join(sched) + "\n]\n"
            "optim_wrapper = dict(\n    _delete_=True,\n    type='OptimWrapper',\n" + "\n".join(optim) + "\n")


def render(spec, variant: str, kind: DetKind, dataset: str, figs) -> str:
    backbone, neck = backbone_and_neck(spec, variant, kind)
    neck_title = (f"the upsampling FPN (strides {kind.strides})" if spec.upsample_neck else "FPN")
    recipe = official_recipe(spec, kind.key, variant)
    lvis = LVIS_NOTE if dataset == "lvis" else ""
    if recipe:
        rec_text = (f"official ({recipe.source_of(variant)}): {optimizer_summary(recipe)}, {SCHEDULE_1X}" + lvis)
    else:
        rec_text = STANDARD_RECIPE + lvis
    pub = published_text(figs)
    if not figs and recipe and recipe.results and dataset == "coco":
        pub = recipe.results
    w = spec.weights_file(variant)
    weights = (f"ImageNet weights (recommended; the official file, converted on load): tools/train.py CONFIG "
               f"--cfg-options model.backbone.init_cfg.type=Pretrained model.backbone.init_cfg.checkpoint={w}"
               if w else f"ImageNet weights: none were released for {spec.title} (without init_cfg the backbone "
                         f"trains from scratch).")
    text = header(f"{kind.title} 1x, {spec.title} {variant.upper()} + {neck_title}, {DATASETS[dataset]['title']}.",
                  f"Recipe: {rec_text}.", f"Published: {pub}.", weights)
    data = DATASETS[dataset].get("base", kind.coco_data)
    text += bases([f"../_base_/mmdet/models/{kind.key}_{neck_token(spec)}.py", f"../_base_/mmdet/datasets/{data}.py",
                   "../_base_/mmdet/schedules/adamw_1x.py", "../_base_/mmdet/default_runtime.py"])
    extra = []
    if dataset == "lvis":
        extra = ["    roi_head=dict(bbox_head=dict(num_classes=1203), mask_head=dict(num_classes=1203)),",
                 "    # LVIS: up to 300 detections per image, kept down to a very low score",
                 "    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300)),"]
    text += model_block([("backbone", backbone), ("neck", neck)], extra)
    if recipe:
        text += recipe_lines(recipe)
    return text


def generate(spec) -> Iterator[Generated]:
    for v in spec.variants:
        for kind in KINDS:
            for dataset in ("coco", "lvis") if kind.lvis and v == spec.det_variant else ("coco",):
                path = config_path(spec, v, kind, dataset)
                figs = figures_of(published_rows("detection", spec, v, config=path), PUBLISHED_METRICS)
                yield Generated(path, render(spec, v, kind, dataset, figs), spec, v, kind.key, dataset, "mmdet", figs,
                                (800, 1333))
