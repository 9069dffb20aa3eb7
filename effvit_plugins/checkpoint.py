"""Reading weight files safely.

Pretrained weight files (official releases, converted files, ImageNet checkpoints) are always read with
``torch.load(weights_only=True)``. Only the OpenMMLab runner's own resume checkpoints need more; see
:mod:`effvit_plugins.mm.compat` for that path.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Dict, Mapping

import torch

WRAPPER_KEYS = ("state_dict", "model", "model_ema", "module", "net")


class CheckpointError(RuntimeError):
    """A weight file could not be read or does not fit the model."""


def load_weights_file(path: str, map_location="cpu") -> dict:
    """``torch.load`` a weight file with ``weights_only=True`` and a clear error for missing/corrupt files."""
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file not found: {path!r}. Check the path (or download the official weights).")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path!r} holds Python objects besides tensors, so it is not loaded as pretrained weights "
            f"(weights_only=True). Re-save only its state_dict: torch.save(ckpt['state_dict'], 'weights.pth'). "
            f"Detail: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"Could not read checkpoint {path!r}: the file looks truncated or corrupt ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}). Download it again; nothing was loaded."
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path!r} does not contain a dict of tensors (found {type(obj).__name__}).")
    return dict(obj)


def unwrap_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """Return the tensor dict inside ``{'state_dict': ...}``, ``{'model': ...}`` (or bare), without ``module.``."""
    sd = obj
    for _ in range(3):
        inner = next((sd[k] for k in WRAPPER_KEYS if k in sd and isinstance(sd[k], Mapping)), None)
        if inner is None or any(torch.is_tensor(v) for v in sd.values()) and not inner:
            break
        sd = inner
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        out[k[len("module."):] if k.startswith("module.") else k] = v
    if not out:
        raise CheckpointError(f"No tensors found in the checkpoint (top-level keys: {list(obj)[:10]}).")
    return out
