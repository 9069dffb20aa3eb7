"""What ``tools/deploy/export_onnx.py`` exports from a config: plain ``nn.Module`` views of an OpenMMLab model.

The OpenMMLab-specific part of deployment; the export itself (framework-free) is :mod:`effvit_plugins.deploy`.

* :class:`ClassifierLogits` -- an mmpretrain ``ImageClassifier``: logits ``(N, classes)``.
* :class:`SegmentorLogits` -- an mmseg ``EncoderDecoder``: logits resized to the input size ``(N, classes, H, W)``
  (bilinear, the segmentor's ``align_corners``, as mmseg's ``predict`` does before the arg-max).
* :class:`Features` -- the backbone's multi-scale maps (then the neck, when the config has one).

Inputs are preprocessed images ``(N, 3, H, W)`` float32: RGB, normalised with the ``data_preprocessor``'s
mean/std (:func:`preprocessing` reads them from the config).
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..deploy.rewrites import exporting_fixed_size


class ClassifierLogits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x, mode="tensor")
        return out[0] if isinstance(out, (tuple, list)) else out


class SegmentorLogits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.align_corners = bool(getattr(model, "align_corners", False))

    def forward(self, x):
        logits = self.model(x, mode="tensor")
        if exporting_fixed_size():
            # a Reshape between the classifier conv and the Resize keeps onnxruntime from running this Resize in its
            # blocked NCHWc layout and then reordering the full-size logits on one thread (about 60 ms at 1024x2048)
            n, c, h, w = logits.shape
            logits = logits.reshape(n, c * h, w).reshape(n, c, h, w)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)


class Features(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.neck = getattr(model, "neck", None)

    def forward(self, x):
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        return tuple(feats)


def model_kind(model: nn.Module) -> str:
    """'classifier', 'segmentor' or 'detector' for an mmpretrain / mmseg / mmdet model."""
    names = {c.__module__.split(".")[0] for c in type(model).__mro__}
    if "mmseg" in names:
        return "segmentor"
    if "mmdet" in names:
        return "detector"
    if "mmpretrain" in names:
        return "classifier"
    raise ValueError(f"{type(model).__name__} is not an mmpretrain classifier, mmseg segmentor or mmdet detector.")


def preprocessing(cfg) -> dict:
    """mean / std / bgr_to_rgb of the config's data preprocessor (what the ONNX input must already have)."""
    dp = cfg.model.get("data_preprocessor") or cfg.get("data_preprocessor") or {}
    return dict(mean=list(dp.get("mean", [])), std=list(dp.get("std", [])),
                to_rgb=bool(dp.get("to_rgb", dp.get("bgr_to_rgb", False))))


def feature_config(cfg, out_indices: Optional[Sequence[int]] = None):
    """``cfg`` with the backbone returning the maps to export: ``out_indices`` if given, else every map when the
    model has no neck (a neck needs the config's own outputs, so a config with a neck is kept as it is)."""
    cfg = copy.deepcopy(cfg)
    has_neck = cfg.model.get("neck") is not None
    if out_indices is not None:
        if has_neck:
            raise ValueError("--out-indices cannot be used with a config whose model has a neck: the neck needs the "
                             "backbone outputs the config gives it. Drop --out-indices (the neck outputs are "
                             "exported).")
        cfg.model.backbone.out_indices = tuple(int(i) for i in out_indices)
    elif not has_neck:
        cfg.model.backbone.out_indices = None  # resolved by build_export_model once the map count is known
    return cfg


def build_export_model(cfg, checkpoint: Optional[str] = None, features: bool = False,
                       out_indices: Optional[Sequence[int]] = None) -> Tuple[nn.Module, List[str], str]:
    """(module to export, output names, kind) for a config (+ optional checkpoint).

    ``features`` exports the backbone (+ neck) outputs of any config; otherwise classifiers give logits and
    segmentors logits at the input size. Detectors are only exported as features (their post-processing, NMS,
    is not a network output).
    """
    from .tools_common import build_model_from_cfg

    if features:
        cfg = feature_config(cfg, out_indices)
        if cfg.model.get("neck") is None and cfg.model.backbone.get("out_indices", ()) is None:
            probe = copy.deepcopy(cfg)
            probe.model.backbone.out_indices = (-1,)
            with torch.device("meta"):
                n_maps = build_model_from_cfg(probe, device="meta").backbone.num_stages
            cfg.model.backbone.out_indices = tuple(range(n_maps))
    model = build_model_from_cfg(cfg)
    kind = model_kind(model)
    if checkpoint:
        from mmengine.runner import load_checkpoint

        load_checkpoint(model, checkpoint, map_location="cpu", strict=True, revise_keys=[(r"^module\.", "")])
        model.eval()
    if features:
        wrapper = Features(model).eval()
        if wrapper.neck is None:
            names = [f"stride{s}" for s in model.backbone.out_strides]
        else:
            with torch.inference_mode():
                n = len(wrapper(torch.randn(1, 3, 64, 64)))
            names = [f"neck{i}" for i in range(n)]
        return wrapper, names, kind
    if kind == "classifier":
        return ClassifierLogits(model).eval(), ["logits"], kind
    if kind == "segmentor":
        return SegmentorLogits(model).eval(), ["logits"], kind
    raise ValueError(f"{type(model).__name__} ({kind}): only its backbone features can be exported (add "
                     f"--features); box/mask post-processing is not part of the network.")
