"""``docs/your_config.md``: "your existing config + our backbone" -- the minimal override of upstream configs (mmdet's
Mask R-CNN, mmseg's Semantic FPN and UPerNet, Detectron2's Mask R-CNN) for every family, and each variant's maps
(strides and channels, read from the backbones' ``feature_info``).

The snippets reuse the generated configs' settings (:func:`configgen.mmdet.backbone_and_neck`,
:func:`configgen.mmseg.sem_fpn_backbone`, :func:`configgen.detectron2.backbone_options`); tests/mm/test_your_config.py
builds every snippet of the committed page with the upstream base configs and runs it.
"""
from __future__ import annotations

import functools
import os
from typing import Dict, List, Tuple

from . import detectron2 as d2gen
from . import mmdet as mmdetgen
from . import mmseg as mmseggen
from .common import MARKER, field, fmt, out_channels

PATH = "docs/your_config.md"
DOC_MARKER = f"<!-- {MARKER} -->"
IMPORTS = "custom_imports = dict(imports=['effvit_plugins'], allow_failed_imports=False)"
MASK_RCNN = "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"
SEM_FPN = "mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py"
UPERNET = "mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py"
D2_BASE = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
NECK_CHANNELS = 256  # the out_channels of the upstream FPNs and of our upsampling FPN in the snippets
PRETRAINED_NONE = "    pretrained=None,  # the base's ResNet weights, which mmseg copies into the backbone"


def feature_maps(spec, variant: str) -> Tuple[Tuple[int, int], ...]:
    """``((stride, channels), ...)`` of every map, from the backbone's ``feature_info`` (built on the meta device)."""
    return _feature_maps(spec.backbone, variant)


@functools.lru_cache(maxsize=None)
def _feature_maps(backbone_cls: type, variant: str) -> Tuple[Tuple[int, int], ...]:
    import torch

    with torch.device("meta"):
        backbone = backbone_cls(arch=variant)
    return tuple((int(f["reduction"]), int(f["num_chs"])) for f in backbone.feature_info)


def four_levels(spec) -> Tuple[int, ...]:
    """The ``out_indices`` an FPN / UPerNet base reads: the maps of strides 4-32 (all maps with the upsampling
    neck)."""
    return spec.dense_indices(4)


def weights_comment(spec, variant: str) -> str:
    w = spec.weights_file(variant)
    if w is None:
        return f"# no official {spec.title} ImageNet weights were released: the backbone starts from scratch"
    return f"# ImageNet weights: backbone init_cfg=dict(type='Pretrained', checkpoint='<path or URL of {w}>')"


def upsample_neck(spec, variant: str, levels: int) -> dict:
    """Our upsampling FPN (``spec.upsample_neck``) giving ``levels`` maps from stride 4 on."""
    idx = four_levels(spec)
    extra = (spec.feature_strides[idx[0]] // 4).bit_length() - 1  # transposed convs down to stride 4
    return dict(_delete_=True, type=mmseggen.UPSAMPLE_NECK, in_channels=out_channels(spec, variant, idx),
                out_channels=NECK_CHANNELS, num_outs=levels, num_extra_trans_convs=extra)


def model_lines(fields: List[Tuple[str, dict]], first: List[str] = ()) -> str:
    lines = ["model = dict("] + list(first) + [field(k, v) for k, v in fields]
    lines[-1] = lines[-1].rstrip(",") + ")"
    return "\n".join(lines)


def mask_rcnn(spec, variant: str) -> str:
    kind = next(k for k in mmdetgen.KINDS if k.key == "mask-rcnn")
    backbone, neck = mmdetgen.backbone_and_neck(spec, variant, kind)
    if spec.upsample_neck:  # five levels, strides 4-64, as the base's FPN
        neck = upsample_neck(spec, variant, 5)
    return "\n".join([f"_base_ = '{MASK_RCNN}'", IMPORTS, model_lines(
        [("backbone", dict(_delete_=True, **backbone)), ("neck", neck)],
        ["    " + weights_comment(spec, variant)])])


def seg_backbone(spec, variant: str) -> dict:
    return dict(_delete_=True, type=spec.name, arch=variant, out_indices=four_levels(spec),
                **mmseggen.sem_fpn_backbone(spec, variant))


def sem_fpn(spec, variant: str) -> str:
    fields = [("backbone", seg_backbone(spec, variant))]
    if spec.upsample_neck:  # five levels (strides 4-64) into FPNHead
        fields += [("neck", upsample_neck(spec, variant, 5)),
                   ("decode_head", dict(in_channels=[NECK_CHANNELS] * 5, in_index=list(range(5)),
                                        feature_strides=[4 << i for i in range(5)]))]
    else:
        fields.append(("neck", dict(in_channels=out_channels(spec, variant, four_levels(spec)))))
    return "\n".join([f"_base_ = '{SEM_FPN}'", IMPORTS, model_lines(
        fields, [PRETRAINED_NONE, "    " + weights_comment(spec, variant)])])


def upernet(spec, variant: str) -> str:
    fields = [("backbone", seg_backbone(spec, variant))]
    if spec.upsample_neck:  # UPerHead reads the first four levels (strides 4-32) of the upsampling FPN's five
        neck = upsample_neck(spec, variant, 5)
        del neck["_delete_"]  # the UPerNet base has no neck
        channels = [NECK_CHANNELS] * 4
        fields.append(("neck", neck))
    else:
        channels = out_channels(spec, variant, four_levels(spec))
    fields += [("decode_head", dict(in_channels=channels)), ("auxiliary_head", dict(in_channels=channels[2]))]
    return "\n".join([f"_base_ = '{UPERNET}'", IMPORTS, model_lines(
        fields, [PRETRAINED_NONE, "    " + weights_comment(spec, variant)])])


def detectron2(spec, variant: str) -> str:
    task = next(t for t in d2gen.TASKS if t.key == "mask_rcnn")
    opts = d2gen.backbone_options(spec, variant, task)
    lines = ["from detectron2 import model_zoo", "from detectron2.config import get_cfg",
             "from effvit_plugins.detectron2 import add_effvit_config", "",
             "cfg = add_effvit_config(get_cfg())",
             f"cfg.merge_from_file(model_zoo.get_config_file('{D2_BASE}'))",
             f"cfg.MODEL.BACKBONE.NAME = 'build_{spec.key}{task.builder}_backbone'",
             f"cfg.MODEL.EFFVIT.ARCH = '{variant}'"]
    lines += [f"cfg.MODEL.EFFVIT.{k} = {fmt(v)}" for k, v in opts.items()]
    if spec.upsample_neck:
        lines.append(f"cfg.MODEL.FPN.IN_FEATURES = {fmt(opts['OUT_FEATURES'])}")
    w = spec.weights_file(variant)
    lines += ["# our backbones read RGB images normalised with ImageNet's mean / std (the base: BGR, Caffe's)",
              "cfg.INPUT.FORMAT = 'RGB'",
              "cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]",
              "cfg.MODEL.WEIGHTS = ''  # not the base's ResNet-50" + (
                  f"; the path or URL of {w} loads it (converted)" if w else
                  f"; no official {spec.title} ImageNet weights were released")]
    return "\n".join(lines)


SECTIONS = (  # (title, base, renderer, language)
    ("mmdet: Mask R-CNN", MASK_RCNN, mask_rcnn, "python"),
    ("mmseg: Semantic FPN", SEM_FPN, sem_fpn, "python"),
    ("mmseg: UPerNet", UPERNET, upernet, "python"),
    ("Detectron2: Mask R-CNN", f"detectron2 model zoo {D2_BASE}", detectron2, "python"),
)


def channel_table(specs) -> List[str]:
    lines = ["| `type=` | variant | maps `out_indices` 0, 1, …: stride / channels | FPN / UPerNet: `out_indices` → "
             "neck / head `in_channels` | official ImageNet file |", "|---|---|---|---|---|"]
    for spec in specs:
        idx = four_levels(spec)
        for v in spec.variants:
            maps = feature_maps(spec, v)
            cells = " · ".join(f"{s} / {c}" for s, c in maps)
            levels = f"`{fmt(idx)}` → `{[maps[i][1] for i in idx]}`"
            if spec.upsample_neck:
                levels += f" + `{mmseggen.UPSAMPLE_NECK}`"
            lines.append(f"| `{spec.name}` | {v} | {cells} | {levels} | {spec.weights_file(v) or 'none released'} |")
    return lines


def render(specs=None) -> str:
    from effvit_plugins.models.spec import families

    specs = list(families() if specs is None else specs)
    msra = [s for s in specs if s.upsample_neck]
    seg_head = [s for s in specs if s.seg_head]
    out = [
        "# Your existing config + our backbone", "", DOC_MARKER, "",
        "You have a config of mmdet, mmseg or Detectron2 made for ResNet and want one of our backbones in it. Each "
        "snippet below is a complete config file (save it as `my_config.py`, use it with the framework's own tools, "
        "e.g. `python tools/train.py my_config.py` of mmdet / mmseg) written for the smallest variant of a family; "
        "for another variant change `arch` and the `in_channels` from the table. `tests/mm/test_your_config.py` "
        "builds every snippet of this page with the upstream base config and runs it.", "",
        "What changes, and why:", "",
        "1. `custom_imports` registers our backbones and necks in mmdet / mmseg (`import effvit_plugins`).",
        "2. `backbone=dict(_delete_=True, ...)`: the base's backbone dict is ResNet's. Without `_delete_=True` our "
        "dict merges into it and our backbone receives ResNet's arguments (`depth=50`, `style='pytorch'`, ...) and, "
        "in mmdet's bases, `init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')`: an error that "
        "says so.",
        "3. Four levels for the FPN / UPerNet bases (strides 4-32): `out_indices` and the neck's or head's "
        "`in_channels` from the table below"
        + (f" (the configs of {', '.join(s.title for s in seg_head)} with its own segmentation head read three)"
           if seg_head else "") + ". "
        + (f"{', '.join(s.title for s in msra)} has no stride-4/8 maps: the upsampling FPN "
           f"`{mmseggen.UPSAMPLE_NECK}` (its official neck) adds them by transposed convolutions." if msra else ""),
        "4. `model.pretrained=None` (mmseg): mmseg's `EncoderDecoder` copies `model.pretrained` "
        "(`'open-mmlab://resnet50_v1c'` in its ResNet bases) into the backbone's `pretrained`; our backbones refuse "
        "ResNet weights with an error that says where they came from.",
        "5. Our weights: `init_cfg=dict(type='Pretrained', checkpoint=...)` in the backbone dict with the official "
        "ImageNet file as released (converted on load): a local path or an `https://` URL (downloaded once to the "
        "torch hub cache and checked against the SHA-256 prefix in its file name, if it has one). `load_from=` and "
        "Detectron2's `MODEL.WEIGHTS` take the same.", "",
        "## Maps of every variant", "",
        "From the backbones' `feature_info` (`num_chs`, `reduction`); `backbone.out_channels` gives the list for "
        "given `out_indices`.", ""] + channel_table(specs) + [""]
    for title, base, renderer, lang in SECTIONS:
        out += [f"## {title}", "", f"Base: `{base}`.", ""]
        for spec in specs:
            v = spec.variants[0]
            out += [f"### {title}: {spec.title}", "", f"```{lang}", renderer(spec, v), "```", ""]
    out += ["Train it with `tools/train_net.py --config-file ...` of this repository or with "
            "`effvit_plugins.detectron2.EffViTCheckpointer` in your own loop: Detectron2's plain "
            "`DetectionCheckpointer` does not convert the official files. LazyConfig versions of all our Detectron2 "
            "configs (Mask R-CNN, RetinaNet, LVIS, Cityscapes) are in `configs/detectron2/LazyConfigs/` "
            "([docs/detectron2.md](detectron2.md)).", ""]
    return "\n".join(out)


def snippets(text: str) -> Dict[str, List[str]]:
    """``{section title: [code of each snippet]}`` of a rendered page (what the tests build)."""
    out: Dict[str, List[str]] = {}
    for block in text.split("\n## ")[1:]:
        section = block.split("\n", 1)[0]
        codes = [c.split("\n", 1)[1].rsplit("\n", 1)[0] for c in block.split("```")[1::2]]
        if codes:
            out[section] = codes
    return out
