"""Checkpoints for Detectron2 models with our backbones: official weight files via ``MODEL.WEIGHTS``, and
Detectron2 / fvcore checkpoints under torch >= 2.6 without ``weights_only=False``.

:class:`EffViTCheckpointer` is Detectron2's ``DetectionCheckpointer`` with four changes:

* a URL (``http(s)://``) or an mmengine model-zoo name (``open-mmlab://``, ``torchvision://``) in ``MODEL.WEIGHTS``
  is fetched by :func:`effvit_plugins.checkpoint.resolve_checkpoint` (the torch hub cache, checked against the hash
  in the file name) instead of iopath's cache; Detectron2's own ``detectron2://`` names still go to iopath.
* ``.pth`` files are read by :func:`load_d2_checkpoint`: ``torch.load(weights_only=True)`` extended by an
  allow-list (numpy arrays / scalars, standard containers) for what Detectron2 / fvcore training checkpoints hold
  besides tensors; anything else is refused with an explanation (never ``weights_only=False``). Saving, loading and
  ``--resume`` work on torch 2.13.
* ``.pkl`` files (Detectron2 / Detectron model zoo) are unpickled with the same allow-list instead of a full
  ``pickle.load``.
* a file that is not a checkpoint of this model (few of its keys are the model's) but a weight file of one of our
  families -- an official release (any kind it published: ImageNet, segmentation, detection), one of our converted
  files or ``tools/convert_checkpoint.py --to detectron2`` output -- is loaded into the model's backbone through
  :func:`effvit_plugins.convert.load_backbone_weights`, the same strict code path as the OpenMMLab adapters
  (converted on load, bias tables resized, a partial match is an error). The neck of an official detector of a
  family with the upsampling neck (EfficientViT-MSRA) loads into
  :class:`~effvit_plugins.detectron2.backbone.UpsampleFPNBackbone` when it has the same levels. Everything else of
  the model keeps its initialisation (and Detectron2 logs it as not found in the checkpoint, as for any
  ImageNet-pretrained backbone).
"""
from __future__ import annotations

import logging
import pickle
from typing import Optional, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..checkpoint import (CONTAINER_GLOBALS, NUMPY_GLOBALS, NUMPY_PREFIXES, REMOTE_PREFIXES, CheckpointError,
                          load_allowlisted, resolve_checkpoint, unwrap_state_dict)
from ..convert import convert_official, detect_family, load_backbone_weights
from ..models.spec import family_keys, get_family
from .backbone import D2BackboneMixin, UpsampleFPNBackbone

__all__ = ["D2_ALLOWED_GLOBALS", "EffViTCheckpointer", "load_d2_checkpoint", "D2_AUTHOR", "BACKBONE_PREFIX"]

D2_ALLOWED_GLOBALS = NUMPY_GLOBALS | CONTAINER_GLOBALS
D2_AUTHOR = "effvit_plugins"
# where the backbone sits in Detectron2's FPN models (GeneralizedRCNN / RetinaNet / SemanticSegmentor + FPN)
BACKBONE_PREFIX = "backbone.bottom_up."
_OWN_KEY_FRACTION = 0.5  # a file with at least this fraction of the model's keys is a checkpoint of this model

logger = logging.getLogger(__name__)


def load_d2_checkpoint(filename: str):
    """A Detectron2 / fvcore checkpoint (or any weight file) with ``weights_only=True`` plus the allow-list."""
    return load_allowlisted(
        filename, D2_ALLOWED_GLOBALS, NUMPY_PREFIXES, map_location="cpu", kind="Detectron2 checkpoint",
        hint="If you trust this file, extract its tensors with torch.load(path, weights_only=False)['model'] and "
             "save them alone.")


class _AllowListUnpickler(pickle.Unpickler):
    """``pickle`` for model-zoo ``.pkl`` files: only the globals of :data:`D2_ALLOWED_GLOBALS`."""

    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full in D2_ALLOWED_GLOBALS or full.startswith(NUMPY_PREFIXES):
            from ..checkpoint import _resolve_global

            return _resolve_global(full)
        raise pickle.UnpicklingError(f"Refusing to unpickle {full} (not on the allow-list of weight files).")


class EffViTCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that reads files safely and recognises our families' weight files (see the
    module docstring). Drop-in: ``EffViTCheckpointer(model, save_dir).resume_or_load(cfg.MODEL.WEIGHTS, ...)``."""

    def load(self, path: str, *args, **kwargs):
        if path and path.startswith(REMOTE_PREFIXES):
            path = resolve_checkpoint(path)
        return super().load(path, *args, **kwargs)

    def _torch_load(self, f):
        return load_d2_checkpoint(f)

    def _load_file(self, filename: str):
        if filename.endswith(".pkl"):
            with open(filename, "rb") as f:
                data = _AllowListUnpickler(f, encoding="latin1").load()
            if "model" in data and "__author__" in data:
                return data
            if "blobs" in data:
                data = data["blobs"]
            return {"model": {k: v for k, v in data.items() if not k.endswith("_momentum")}, "__author__": "Caffe2",
                    "matching_heuristics": True}
        loaded = super()._load_file(filename)
        if loaded.get("matching_heuristics") or not isinstance(loaded.get("model"), dict):
            return loaded
        own = self.model.state_dict()
        keys = [k for k, v in loaded["model"].items() if torch.is_tensor(v)]
        if keys and sum(k in own for k in keys) >= _OWN_KEY_FRACTION * min(len(keys), len(own)):
            return loaded  # a Detectron2 checkpoint of this (or a closely related) model
        found = self._backbone()
        if found is None:
            return loaded
        return self._load_family_weights(filename, loaded, *found)

    def _backbone(self) -> Optional[Tuple[str, torch.nn.Module]]:
        for name, module in self.model.named_modules():
            if isinstance(module, D2BackboneMixin):
                return name, module
        return None

    def _load_family_weights(self, filename: str, loaded: dict, name: str, backbone: torch.nn.Module) -> dict:
        family = backbone.family
        sd = unwrap_state_dict(loaded)
        prefix = BACKBONE_PREFIX if any(k.startswith(BACKBONE_PREFIX) for k in sd) else None
        if prefix is None and detect_family(sd) is None and not any(k.startswith("backbone.") for k in sd):
            raise CheckpointError(
                f"{filename!r} is neither a checkpoint of this model (none of its first keys {list(sd)[:3]} is a "
                f"model key) nor a weight file of a known family ({', '.join(family_keys())}). Nothing was loaded.")
        log = lambda m: logger.info(f"{type(backbone).__name__}: {m}")  # noqa: E731
        load_backbone_weights(backbone, filename, family, prefix=prefix, logger=log)
        bb_prefix = f"{name}." if name else ""
        out = {bb_prefix + k: v for k, v in backbone.state_dict().items()}
        out.update(self._official_neck(sd, family, name))
        return {"model": out, "__author__": D2_AUTHOR}

    def _official_neck(self, sd: dict, family: str, backbone_name: str) -> dict:
        """The neck of an official detector of a family with the upsampling neck (``spec.upsample_neck``), under
        the model's UpsampleFPNBackbone keys (when it has the same levels; otherwise a log line says why it was not
        loaded)."""
        if not get_family(family).upsample_neck or detect_family(sd) != family:
            return {}
        neck = {k[len("neck."):]: v for k, v in convert_official(sd, family)[1].items() if k.startswith("neck.")}
        fpn_name = backbone_name.rpartition(".")[0]
        fpn = self.model.get_submodule(fpn_name) if fpn_name else None
        if not neck or not isinstance(fpn, UpsampleFPNBackbone):
            return {}
        own = {k: v for k, v in fpn.state_dict().items() if not k.startswith("bottom_up.")}
        if set(neck) != set(own) or any(neck[k].shape != own[k].shape for k in own):
            logger.info(f"The neck of this official detector was not loaded: its levels differ from the model's "
                        f"FPN ({len(neck)} vs {len(own)} tensors).")
            return {}
        logger.info(f"Loading the official upsampling FPN ({len(neck)} tensors) into {fpn_name}.")
        return {f"{fpn_name}.{k}": v for k, v in neck.items()}
