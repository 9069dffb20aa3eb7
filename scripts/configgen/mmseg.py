"""mmseg 1.x configs.

* A family with its own official segmentation head (``spec.seg_head``): one config per published (variant,
  dataset) setting, on the head's model base and schedule.
* Every other family: Semantic FPN (Kirillov et al. 2019, as mmseg's fpn_r50) on ADE20K 512x512 and Cityscapes
  for every variant; the variants after ``spec.variants[0]`` inherit its config and change only the backbone
  (mmseg's habit). Backbone options: the official dense backbones' (``spec.dense_backbone_kwargs(variant,
  'seg')``; BatchNorm statistics are trained, as in mmseg's fpn_r50). Families with ``spec.upsample_neck`` get
  the upsampling FPN (transposed convolutions down to stride 4). Recipe: the family's official one
  (``spec.official_recipes['sem-fpn']``, written over the base where it differs), else the default below.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

from .common import (Generated, bases, core_default, field, figures_of, fmt, header, model_block, num, official_recipe,
                     out_channels, published_rows, published_text)

# The registered name of the upsampling FPN (effvit_plugins/mm/necks.py)
UPSAMPLE_NECK = "EfficientViTMSRAFPN"


@dataclasses.dataclass(frozen=True)
class SemFPNRecipe:
    """The default Semantic FPN recipe: that of ``configs/_base_/schedules/adamw_poly_40k.py``."""

    source: str = "snap-research/EfficientFormer segmentation/configs/sem_fpn"
    lr: float = 2e-4
    weight_decay: float = 1e-4
    min_lr: float = 0.0


DEFAULT_SEM_FPN = SemFPNRecipe()
SEM_FPN_SCHEDULE = ("AdamW lr {lr}, weight decay {wd}, poly decay (power 0.9, min lr {min_lr}), 40k iterations, "
                    "Semantic FPN as mmseg's fpn_r50")
SEM_FPN_DATASETS = {
    "ade20k": dict(name="8xb4-40k_ade20k-512x512", title="ADE20K 512x512", size=(512, 512),
                   data="8 GPUs x 4 images, 512x512 crops; test at short side 512, sides resized to multiples of 32"),
    "cityscapes": dict(name="8xb2-40k_cityscapes-512x1024", title="Cityscapes, evaluated on the full 1024x2048 images",
                       size=(1024, 2048),
                       data="mmseg's Cityscapes Semantic FPN data setting (fpn_r50_4xb2-80k_cityscapes-512x1024: "
                            "512x1024 crops, full-size test) at 8 GPUs x 2 images, scaled as the ADE20K recipe of "
                            f"{DEFAULT_SEM_FPN.source} scales PVT's (twice the GPUs, half the iterations)"),
}
SEG_HEAD_DATASETS = {
    "cityscapes": dict(token="cityscapes-1024x2048", base="cityscapes_1024x2048", title="Cityscapes (1024x2048)",
                       crop=(1024, 1024), size=(1024, 2048)),
    "ade20k": dict(token="ade20k-512x512", base="ade20k_512x512", title="ADE20K (512x512)", crop=(512, 512),
                   size=(512, 512)),
}


def sem_fpn_path(spec, variant: str, dataset: str) -> str:
    return f"configs/{spec.config_folder}/fpn_{spec.config_prefix}-{variant}_{SEM_FPN_DATASETS[dataset]['name']}.py"


def sem_fpn_backbone(spec, variant: str) -> dict:
    kw = spec.dense_backbone_kwargs(variant, "seg")
    kw.pop("norm_eval", None)  # BatchNorm statistics are trained (mmseg's fpn_r50)
    return kw


def render_sem_fpn(spec, variant: str, dataset: str, figs) -> str:
    ds = SEM_FPN_DATASETS[dataset]
    first = spec.variants[0]
    idx = spec.dense_indices(4)
    channels = out_channels(spec, variant, idx)
    strides = [spec.feature_strides[i] for i in idx]
    recipe = official_recipe(spec, "sem-fpn", variant)
    pub = published_text(figs)
    if not figs and recipe and recipe.results:
        pub = recipe.results
    paragraphs = [f"Semantic FPN + {spec.title} {variant.upper()}, {ds['title']}. Published result: {pub}."]
    if variant != first:
        paragraphs.append(f"Recipe and settings: those of {sem_fpn_path(spec, first, dataset).rsplit('/', 1)[1]} "
                          f"(inherited); only the backbone differs.")
    else:
        rec = recipe or DEFAULT_SEM_FPN
        if recipe and dataset == "ade20k":
            where = f"the official one ({recipe.source_of(variant)})"
        elif recipe:
            where = (f"the family's official ADE20K one ({recipe.source_of(variant)}; no official Cityscapes recipe "
                     f"exists)")
        else:
            where = f"the default one ({DEFAULT_SEM_FPN.source}; this family has no official segmentation recipe)"
        sched = SEM_FPN_SCHEDULE.format(lr=num(rec.lr), wd=num(rec.weight_decay), min_lr=num(rec.min_lr))
        paragraphs.append(f"Recipe: {where}: {sched}; {ds['data']}.")
        if spec.upsample_neck:
            paragraphs.append(f"The backbone's maps have strides {'/'.join(map(str, strides))}: the upsampling FPN "
                              f"({UPSAMPLE_NECK}) adds the finer levels by transposed convolutions, so FPNHead gets "
                              f"strides 4-{max(strides)}.")
    w = spec.weights_file(variant)
    if w:
        paragraphs.append(f"ImageNet init (the official file, converted on load): --cfg-options "
                          f"model.backbone.init_cfg.type=Pretrained model.backbone.init_cfg.checkpoint={w}")
    text = header(*paragraphs)
    kw = sem_fpn_backbone(spec, variant)
    if variant != first:
        base_kw = sem_fpn_backbone(spec, first)
        backbone = dict(arch=variant)
        backbone.update({k: v for k, v in kw.items() if base_kw.get(k) != v})
        backbone.update({k: core_default(spec, k) for k in base_kw if k not in kw})
        return text + (f"_base_ = ['./{sem_fpn_path(spec, first, dataset).rsplit('/', 1)[1]}']\n"
                       f"model = dict(backbone={fmt(backbone)}, neck=dict(in_channels={channels}))\n")
    text += f"_base_ = ['../_base_/sem-fpn_{ds['name']}.py']\n"
    backbone = dict(type=spec.name, arch=variant, out_indices=idx, **kw)
    if spec.upsample_neck:
        extra = (min(strides) // 4).bit_length() - 1  # transposed convs down to stride 4
        levels = len(strides) + extra
        text += model_block([
            ("backbone", backbone),
            ("neck", dict(type=UPSAMPLE_NECK, in_channels=channels, num_outs=levels, num_extra_trans_convs=extra)),
            ("decode_head", dict(in_channels=[256] * levels, in_index=list(range(levels)),
                                 feature_strides=[4 << i for i in range(levels)]))])
    else:
        text += model_block([("backbone", backbone), ("neck", dict(in_channels=channels))])
    if recipe and (recipe.lr, recipe.weight_decay) != (DEFAULT_SEM_FPN.lr, DEFAULT_SEM_FPN.weight_decay):
        text += f"optim_wrapper = dict(optimizer=dict(lr={recipe.lr!r}, weight_decay={recipe.weight_decay!r}))\n"
    if recipe and recipe.min_lr != DEFAULT_SEM_FPN.min_lr:
        text += (f"param_scheduler = [dict(type='PolyLR', eta_min={recipe.min_lr!r}, power=0.9, begin=0, end=40000, "
                 "by_epoch=False)]\n")
    return text


def render_seg_head(spec, variant: str, dataset: str, figs) -> str:
    head = spec.seg_head
    ds = SEG_HEAD_DATASETS[dataset]
    text = header(f"{spec.title} {variant.upper()} + the official segmentation head, {ds['title']}. Published: "
                  f"{published_text(figs)}.", f"Head settings: the official ones ({head.source}).")
    text += bases([f"../_base_/models/{head.model_base}.py", f"../_base_/datasets/{ds['base']}.py",
                   "../_base_/default_runtime.py", f"../_base_/schedules/{head.schedule}.py"])
    text += f"crop_size = {ds['crop']}\ndata_preprocessor = dict(size=crop_size)\n"
    text += "\n".join(["model = dict(", "    data_preprocessor=data_preprocessor,",
                       field("backbone", dict(arch=variant)),
                       field("decode_head", dict(head.settings[(variant, dataset)])).rstrip(",") + ")"]) + "\n"
    return text


def seg_head_path(spec, variant: str, dataset: str) -> str:
    token = SEG_HEAD_DATASETS[dataset]["token"]
    return f"configs/{spec.config_folder}/{spec.seg_head.config_name.format(v=variant, dataset=token)}.py"


def generate(spec) -> Iterator[Generated]:
    if spec.seg_head is not None:
        for (v, dataset) in sorted(spec.seg_head.settings):
            if dataset not in SEG_HEAD_DATASETS:
                raise ValueError(f"{spec.key}: seg_head setting for unknown dataset {dataset!r}; the generator knows "
                                 f"{', '.join(SEG_HEAD_DATASETS)}")
            path = seg_head_path(spec, v, dataset)
            figs = figures_of(published_rows("segmentation", spec, v, config=path), ("mIoU",))
            yield Generated(path, render_seg_head(spec, v, dataset, figs), spec, v, "seg-head", dataset, "mmseg",
                            figs, SEG_HEAD_DATASETS[dataset]["size"])
        return
    for v in spec.variants:
        for dataset, ds in SEM_FPN_DATASETS.items():
            path = sem_fpn_path(spec, v, dataset)
            figs = figures_of(published_rows("segmentation", spec, v, config=path), ("mIoU",))
            yield Generated(path, render_sem_fpn(spec, v, dataset, figs), spec, v, "sem-fpn", dataset, "mmseg", figs,
                            ds["size"])
