"""Official checkpoints -> our layouts. One code path used by ``init_cfg=dict(type='Pretrained')``,
``tools/convert_checkpoint.py`` and the Detectron2 adapter.

Layouts produced:
* ``'cls'``: ``backbone.*`` + ``head.*`` (our classifiers and the mmpretrain ``ImageClassifier`` configs),
* ``'seg'`` (EfficientViT-MIT SegHead): ``backbone.*`` + ``decode_head.*`` (mmseg ``EncoderDecoder``).
"""
from __future__ import annotations

import importlib
from typing import Dict, Optional, Tuple

import torch

from .checkpoint import CheckpointError, load_weights_file, unwrap_state_dict

# family key -> (module, human name). Each module provides OFFICIAL_KEY_SIGNATURE and convert_official_checkpoint.
FAMILIES = {
    "efficientvit_mit": ("effvit_plugins.models.efficientvit_mit", "EfficientViT (MIT)"),
    "efficientvit_msra": ("effvit_plugins.models.efficientvit_msra", "EfficientViT (MSRA)"),
    "edgevit": ("effvit_plugins.models.edgevit", "EdgeViT"),
    "efficientformer": ("effvit_plugins.models.efficientformer", "EfficientFormer"),
}


def family_module(family: str):
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; valid: {', '.join(FAMILIES)}.")
    return importlib.import_module(FAMILIES[family][0])


def _matches(keys, signature) -> bool:
    return all(any(sig in k for k in keys) for sig in signature)


def detect_family(state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    """Which family's official checkpoint (or our converted layout) ``state_dict`` looks like, or None."""
    keys = [k for k in state_dict]
    for fam in FAMILIES:
        try:
            mod = family_module(fam)
        except ImportError:
            continue
        if _matches(keys, getattr(mod, "OFFICIAL_KEY_SIGNATURE", ())):
            return fam
    return None


def convert_official(state_dict: Dict[str, torch.Tensor], family: Optional[str] = None,
                     seg_head_prefix: str = "decode_head.") -> Tuple[str, Dict[str, torch.Tensor]]:
    """Convert an unwrapped official checkpoint. Returns ``(family, converted_state_dict)``."""
    found = detect_family(state_dict)
    if family is None:
        if found is None:
            raise CheckpointError(
                "Could not recognise the checkpoint's model family from its keys "
                f"(first keys: {list(state_dict)[:5]}). Pass --family / family= with one of: {', '.join(FAMILIES)}.")
        family = found
    elif found is not None and found != family:
        raise CheckpointError(
            f"This checkpoint looks like a {FAMILIES[found][1]} checkpoint, not {FAMILIES[family][1]}. "
            f"Use it with a {FAMILIES[found][1]} model (family={found!r}).")
    mod = family_module(family)
    if family == "efficientvit_mit":
        return family, mod.convert_official_checkpoint(state_dict, head_prefix=seg_head_prefix
                                                       if any(k.startswith("head.input_ops.") for k in state_dict)
                                                       else "head.")
    return family, mod.convert_official_checkpoint(state_dict)


def backbone_state_dict(path: str, family: str, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Backbone weights from a weight file: an official checkpoint (converted), one of our converted/trained
    checkpoints (``backbone.`` stripped), or a bare backbone state dict. ``prefix`` selects keys explicitly."""
    sd = unwrap_state_dict(load_weights_file(path))
    if prefix:
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sub:
            raise CheckpointError(f"No key of {path!r} starts with prefix {prefix!r} "
                                  f"(first keys: {list(sd)[:5]}). Use prefix=None for a bare backbone file.")
        return sub
    found = detect_family(sd)
    if found is not None:
        if found != family:
            raise CheckpointError(
                f"{path!r} looks like a {FAMILIES[found][1]} checkpoint, but the model is {FAMILIES[family][1]}. "
                "Point init_cfg.checkpoint at weights of the same family.")
        _, sd = convert_official(sd, family)
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


def load_backbone_weights(model: torch.nn.Module, path: str, family: str, prefix: Optional[str] = None,
                          logger=None) -> dict:
    """Load backbone weights into ``model``; loud errors when nothing matches or shapes disagree."""
    sd = backbone_state_dict(path, family, prefix)
    own = model.state_dict()
    matched = [k for k in sd if k in own]
    if not matched:
        raise CheckpointError(
            f"None of the {len(sd)} tensors in {path!r} matches a parameter of {type(model).__name__} "
            f"(checkpoint keys like {list(sd)[:3]}, model keys like {list(own)[:3]}). Wrong file or wrong prefix?")
    resampled = getattr(family_module(family), "RESAMPLED_ON_LOAD", ())
    bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in matched
           if sd[k].shape != own[k].shape and not k.endswith(resampled)]
    if bad:
        raise CheckpointError(f"Shape mismatch loading {path!r} (wrong variant?): " + "; ".join(bad[:5]))
    res = model.load_state_dict({k: sd[k] for k in matched}, strict=False)
    report = dict(loaded=len(matched), missing=list(res.missing_keys), unexpected=[k for k in sd if k not in own])
    msg = (f"Loaded {len(matched)} tensors from {path}; missing {len(report['missing'])}, "
           f"unexpected {len(report['unexpected'])}")
    if report["missing"]:
        msg += f" (missing e.g. {report['missing'][:3]})"
    (logger or print)(msg)
    return report
