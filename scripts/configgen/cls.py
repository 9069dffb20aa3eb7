"""mmpretrain ImageNet-1k configs: one per variant of every family with an ImageNet head (``spec.cls_head``).

Heads match the official classifiers; the evaluation preprocessing is each family's official one (resize of the
short side to floor(224 / crop_pct), bicubic, centre crop 224: ``configs/_base_/mmpretrain/imagenet_224_crop*.py``).
"""
from __future__ import annotations

from typing import Iterator

from .common import Generated, bases, field, figures_of, header, out_channels, published_rows, published_text

LOSS = dict(type="LabelSmoothLoss", label_smooth_val=0.1, mode="original")


def config_path(spec, variant: str) -> str:
    return f"configs/{spec.config_folder}/{spec.config_prefix}-{variant}_{spec.cls_batch}_in1k.py"


def generate(spec) -> Iterator[Generated]:
    if spec.cls_head is None:
        return
    last = len(spec.feature_strides) - 1
    for v in spec.variants:
        path = config_path(spec, v)
        backbone = dict(type=spec.name, arch=v, out_indices=(last,), **spec.cls_backbone_kwargs)
        if spec.cls_drop_path.get(v):
            backbone["drop_path_rate"] = spec.cls_drop_path[v]
        head = dict(type=spec.head_name, in_channels=out_channels(spec, v, (last,))[0], num_classes=1000)
        head.update(spec.cls_head_kwargs(v) if spec.cls_head_kwargs else {})
        if spec.cls_distillation:
            head["distillation"] = True
        head.update(loss=LOSS, topk=(1, 5))
        crop = spec.crop_pct(v)
        figs = figures_of(published_rows("classification", spec, v, config=path), ("top1", "params_M", "macs_G"))
        what = f"{spec.title} {v.upper()}" + (" (with distillation head)" if spec.cls_distillation else "")
        text = header(f"{what} ImageNet-1k classifier at 224 (official head). Published: {published_text(figs)}.",
                      f"Evaluation preprocessing as the official model: crop_pct {crop} (see the dataset base).")
        text += bases([f"../_base_/mmpretrain/imagenet_224_crop{str(crop).replace('.', '')}.py",
                       "../_base_/mmpretrain/adamw_cosine_300e.py", "../_base_/mmpretrain/default_runtime.py"])
        text += "\n".join(["model = dict(", "    type='ImageClassifier',", field("backbone", backbone),
                           "    neck=None,", field("head", head).rstrip(",") + ")"]) + "\n"
        yield Generated(path, text, spec, v, "cls", "imagenet", "mmpretrain", figs, (224, 224))
