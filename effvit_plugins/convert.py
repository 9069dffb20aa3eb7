"""Official checkpoints -> our layouts. One code path used by ``init_cfg=dict(type='Pretrained')``,
``tools/convert_checkpoint.py`` and the Detectron2 adapter.

Every family module provides the same converter, ``convert_official_checkpoint(state_dict) -> state_dict``, taking
an unwrapped official checkpoint of any kind that family released and returning:

* ImageNet checkpoints: ``backbone.*`` + ``head.*`` (our classifiers and the mmpretrain ``ImageClassifier`` configs);
* EfficientViT-MIT segmentation checkpoints: ``backbone.*`` + ``decode_head.*`` (mmseg ``EncoderDecoder``);
* official detection/segmentation models (MSRA, EfficientFormer; mmdet 2.x / mmseg 0.x): ``backbone.*``, ``neck.*``,
  ``rpn_head.*`` ... (the names mmdet 3 / mmseg 1 use).

and the module attributes ``FAMILY``, ``OFFICIAL_KEY_SIGNATURE`` (key fragments all present in the family's official
files), optionally ``OFFICIAL_KEY_EXCLUDE`` (fragments never present), ``NEW_IN_DENSE`` / ``UNUSED_ON_LOAD`` (key
fragments a dense-prediction backbone may lack in / not want from an ImageNet file, as in the official dense code).
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .checkpoint import CheckpointError, load_weights_file, unwrap_state_dict

# family key -> (module, human name)
FAMILIES = {
    "efficientvit_mit": ("effvit_plugins.models.efficientvit_mit", "EfficientViT (MIT)"),
    "efficientvit_msra": ("effvit_plugins.models.efficientvit_msra", "EfficientViT (MSRA)"),
    "edgevit": ("effvit_plugins.models.edgevit", "EdgeViT"),
    "efficientformer_v1": ("effvit_plugins.models.efficientformer_v1", "EfficientFormer V1"),
    "efficientformer_v2": ("effvit_plugins.models.efficientformer_v2", "EfficientFormer V2"),
}


def family_module(family: str):
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; valid: {', '.join(FAMILIES)}.")
    return importlib.import_module(FAMILIES[family][0])


def _matches(keys, mod) -> bool:
    return all(any(sig in k for k in keys) for sig in getattr(mod, "OFFICIAL_KEY_SIGNATURE", ("\0",))) and \
        not any(any(ex in k for k in keys) for ex in getattr(mod, "OFFICIAL_KEY_EXCLUDE", ()))


def detect_family(state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    """Which family's official checkpoint (or our converted layout) ``state_dict`` looks like, or None."""
    keys = list(state_dict)
    for fam in FAMILIES:
        if _matches(keys, family_module(fam)):
            return fam
    return None


def convert_official(state_dict: Dict[str, torch.Tensor], family: Optional[str] = None
                     ) -> Tuple[str, Dict[str, torch.Tensor]]:
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
    return family, family_module(family).convert_official_checkpoint(state_dict)


def backbone_state_dict(path: str, family: str, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Backbone weights from a weight file: an official checkpoint (converted), one of our converted/trained
    checkpoints (``backbone.`` stripped), or a bare backbone state dict. ``prefix`` selects keys explicitly."""
    sd = unwrap_state_dict(load_weights_file(path))
    if prefix:
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sub:
            raise CheckpointError(f"No key of {path!r} starts with prefix {prefix!r} "
                                  f"(first keys: {list(sd)[:5]}). Use prefix=None for a bare backbone file.")
        sd = sub
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


def _has(key: str, fragments) -> bool:
    return any(f in key for f in fragments)


def load_backbone_weights(model: torch.nn.Module, path: str, family: str, prefix: Optional[str] = None,
                          logger: Optional[Callable[[str], None]] = None) -> dict:
    """Load backbone weights into ``model``, strictly.

    Errors (nothing is loaded): no key matches; a shape differs (wrong variant); a parameter of the model is
    missing from the file or the file has tensors the model does not (a partly matching file). The only tolerated
    differences are those of the official dense-prediction code: parameters a dense backbone adds (output norms,
    ``attention_biases_seg``), which keep their initialisation, and ImageNet tables such a backbone does not use.
    Attention-bias tables built for another size are resized (one log line).
    """
    mod = family_module(family)
    sd = backbone_state_dict(path, family, prefix)
    own = model.state_dict()
    matched = [k for k in sd if k in own]
    if not matched:
        raise CheckpointError(
            f"None of the {len(sd)} tensors in {path!r} matches a parameter of {type(model).__name__} "
            f"(checkpoint keys like {list(sd)[:3]}, model keys like {list(own)[:3]}). Wrong file or wrong prefix?")
    # bias tables of another size are resized on load and their index buffers rebuilt (derived data)
    resizable = ("attention_biases", "attention_biases_seg", "attention_bias_idxs", "attention_bias_idxs_seg")
    bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in matched
           if sd[k].shape != own[k].shape and not k.endswith(resizable)]
    if bad:
        raise CheckpointError(f"Shape mismatch loading {path!r} (wrong variant?): " + "; ".join(bad[:5]))
    new = getattr(mod, "NEW_IN_DENSE", ())
    unused = getattr(mod, "UNUSED_ON_LOAD", ())
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    tolerated_missing = [k for k in missing if _has(k, new)]
    tolerated_unused = [k for k in unexpected if _has(k, unused) and k + "_seg" in own]
    missing = [k for k in missing if k not in tolerated_missing]
    unexpected = [k for k in unexpected if k not in tolerated_unused]
    if missing or unexpected:
        hint = ""
        if any(k.endswith("attention_biases_seg") for k in unexpected):
            hint = (" The file holds dense-prediction bias tables (attention_biases_seg): build the backbone with "
                    "seg_resolution= as the file was trained (official: V1 25/16, V2 800/512 for det/seg).")
        elif any(k.endswith("attention_biases_seg") for k in missing):
            hint = " The model expects dense-prediction bias tables (seg_resolution is set) that the file lacks."
        raise CheckpointError(
            f"{path!r} only partly matches {type(model).__name__}: {len(missing)} model tensors are missing from the "
            f"file (e.g. {missing[:3]}) and {len(unexpected)} file tensors have no place in the model "
            f"(e.g. {unexpected[:3]}). Check the variant (arch) and the backbone options.{hint} Nothing was loaded.")
    res = model.load_state_dict({k: sd[k] for k in matched}, strict=False)
    report = dict(loaded=len(matched), missing=list(res.missing_keys), unexpected=tolerated_unused,
                  kept_initialisation=tolerated_missing)
    msg = f"Loaded {len(matched)} tensors from {path}; missing 0, unexpected 0"
    if tolerated_missing:
        msg += (f"; {len(tolerated_missing)} tensors the dense-prediction backbone adds keep their initialisation "
                f"({_summary(tolerated_missing)})")
    if tolerated_unused:
        msg += f"; {len(tolerated_unused)} ImageNet bias tables not used by the dense backbone ignored"
    (logger or print)(msg)
    return report


def _summary(keys: List[str]) -> str:
    kinds = sorted({k.rsplit(".", 1)[-1] if "attention" in k else k.split(".", 1)[0] for k in keys})
    return ", ".join(kinds[:6])
