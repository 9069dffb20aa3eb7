"""Official checkpoints -> our layouts. One code path used by ``init_cfg=dict(type='Pretrained')``,
``tools/convert_checkpoint.py`` and the Detectron2 adapter.

Everything family-specific comes from the family's :class:`~effvit_plugins.models.spec.FamilySpec`:
``spec.convert`` takes an unwrapped official checkpoint of any kind that family released and returns

* ImageNet checkpoints: ``backbone.*`` + ``head.*`` (our classifiers and the mmpretrain ``ImageClassifier`` configs);
* EfficientViT-MIT segmentation checkpoints: ``backbone.*`` + ``decode_head.*`` (mmseg ``EncoderDecoder``);
* official detection/segmentation models (MSRA, EfficientFormer; mmdet 2.x / mmseg 0.x): ``backbone.*``, ``neck.*``,
  ``rpn_head.*`` ... (the names mmdet 3 / mmseg 1 use);

``spec.key_signature`` / ``spec.key_exclude`` recognise the family's files (:func:`detect_family`), and
``spec.new_in_dense`` / ``spec.unused_on_load`` are the differences :func:`load_backbone_weights` tolerates.
Families are named by their key (``spec.key``, see :func:`effvit_plugins.models.spec.get_family`).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .checkpoint import CheckpointError, ForeignCheckpointError, is_zoo_name, load_weights_file, unwrap_state_dict
from .models.spec import FamilySpec, families, family_keys, get_family

# where the backbone sits in Detectron2's FPN models (GeneralizedRCNN / RetinaNet / SemanticSegmentor + FPN):
# the prefix of ``convert_file(..., to='detectron2')`` output
D2_BACKBONE_PREFIX = "backbone.bottom_up."
CONVERT_TARGETS = ("mm", "detectron2")


def _matches(keys, spec: FamilySpec) -> bool:
    return bool(spec.key_signature) and all(any(sig in k for k in keys) for sig in spec.key_signature) and \
        not any(any(ex in k for k in keys) for ex in spec.key_exclude)


def detect_family(state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    """The key of the family whose official checkpoint (or our converted layout) ``state_dict`` looks like, or
    None."""
    keys = list(state_dict)
    return next((spec.key for spec in families() if _matches(keys, spec)), None)


def convert_official(state_dict: Dict[str, torch.Tensor], family: Optional[str] = None
                     ) -> Tuple[str, Dict[str, torch.Tensor]]:
    """Convert an unwrapped official checkpoint. Returns ``(family key, converted_state_dict)``."""
    found = detect_family(state_dict)
    if family is None:
        if found is None:
            raise CheckpointError(
                "Could not recognise the checkpoint's model family from its keys "
                f"(first keys: {list(state_dict)[:5]}). Pass --family / family= with one of: "
                f"{', '.join(family_keys())}.")
        family = found
    spec = get_family(family)
    if found is not None and found != family:
        other = get_family(found).title
        raise CheckpointError(
            f"This checkpoint looks like a {other} checkpoint, not {spec.title}. "
            f"Use it with a {other} model (family={found!r}).")
    return family, spec.convert(state_dict)


def checkpoint_task(converted: Dict[str, torch.Tensor]) -> str:
    """``'detection'``, ``'segmentation'`` or ``'classification'``: what a converted checkpoint holds."""
    if any(k.startswith(("rpn_head.", "roi_head.", "bbox_head.")) for k in converted):
        return "detection"
    if any(k.startswith("decode_head.") for k in converted):
        return "segmentation"
    return "classification"


def to_detectron2(converted: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The backbone of a converted checkpoint under Detectron2's names (:data:`D2_BACKBONE_PREFIX`)."""
    return {D2_BACKBONE_PREFIX + k[len("backbone."):]: v for k, v in converted.items() if k.startswith("backbone.")}


def convert_file(src: str, dst: str, family: Optional[str] = None, to: str = "mm") -> str:
    """Convert the official checkpoint file ``src`` and save it to ``dst``; returns a one-line summary.

    ``to='mm'``: ``{'state_dict': ..., 'meta': ...}`` in the layout of the matching OpenMMLab model (detector,
    segmentor or classifier). ``to='detectron2'``: ``{'model': ...}`` with the backbone alone under Detectron2's
    names, for ``MODEL.WEIGHTS`` or a LazyConfig's ``train.init_checkpoint``. ``family`` (a key) is detected from
    the keys when not given.

    Raises:
        CheckpointError: unreadable file, unrecognised family or a file of another family.
    """
    if to not in CONVERT_TARGETS:
        raise ValueError(f"Unknown conversion target {to!r}; valid: {', '.join(CONVERT_TARGETS)}.")
    sd = unwrap_state_dict(load_weights_file(src))
    family, out = convert_official(sd, family)
    title = get_family(family).title
    meta = {"converted_from": os.path.basename(src), "family": family}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    if to == "detectron2":
        model = to_detectron2(out)
        torch.save({"model": model, "__author__": "effvit_plugins", **meta}, dst)
        return f"{title} backbone for Detectron2: {len(model)} tensors ({D2_BACKBONE_PREFIX}*), saved to {dst}"
    task = checkpoint_task(out)
    torch.save({"state_dict": out, "meta": dict(meta, task=task)}, dst)
    return f"{title} {task} checkpoint: {len(sd)} tensors -> {len(out)} tensors, saved to {dst}"


def backbone_state_dict(path: str, family: str, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Backbone weights from a weight file: an official checkpoint (converted), one of our converted/trained
    checkpoints (``backbone.`` stripped), or a bare backbone state dict. ``prefix`` selects keys explicitly.
    ``path``: a local path or URL (:func:`effvit_plugins.checkpoint.resolve_checkpoint`).

    Raises:
        ForeignCheckpointError: ``path`` is an mmengine model-zoo name (``open-mmlab://``, ``torchvision://``:
            always another architecture's weights; raised before anything is downloaded).
    """
    spec = get_family(family)
    if is_zoo_name(path):
        raise ForeignCheckpointError(
            f"{path!r} names a model of mmengine's model zoo (torchvision's / OpenMMLab's own ResNet-like models), "
            f"never {spec.title} weights; nothing was downloaded.")
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
                f"{path!r} looks like a {get_family(found).title} checkpoint, but the model is {spec.title}. "
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
    spec = get_family(family)
    sd = backbone_state_dict(path, family, prefix)
    own = model.state_dict()
    matched = [k for k in sd if k in own]
    if not matched and detect_family(sd) is None:
        raise ForeignCheckpointError(
            f"None of the {len(sd)} tensors in {path!r} matches a parameter of {type(model).__name__}, and its keys "
            f"(like {list(sd)[:3]}) fit none of the layouts of {', '.join(s.title for s in families())}: it holds "
            "the weights of another architecture. Nothing was loaded.")
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
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    tolerated_missing = [k for k in missing if _has(k, spec.new_in_dense)]
    tolerated_unused = [k for k in unexpected if _has(k, spec.unused_on_load) and k + "_seg" in own]
    missing = [k for k in missing if k not in tolerated_missing]
    unexpected = [k for k in unexpected if k not in tolerated_unused]
    if missing or unexpected:
        hint = ""
        if any(k.endswith("attention_biases_seg") for k in unexpected):
            official = (f" (official {spec.title}: {spec.seg_resolution['det']}/{spec.seg_resolution['seg']} for "
                        "det/seg)" if spec.seg_resolution else "")
            hint = (" The file holds dense-prediction bias tables (attention_biases_seg): build the backbone with "
                    f"seg_resolution= as the file was trained{official}.")
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
