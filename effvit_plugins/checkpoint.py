"""Reading weight files safely.

Pretrained weight files (official releases, converted files, ImageNet checkpoints) are always read with
``torch.load(weights_only=True)``. Training frameworks' own resume checkpoints (OpenMMLab runner, Detectron2 /
fvcore) also hold a few Python objects besides tensors; :func:`load_allowlisted` reads them with
``weights_only=True`` extended by an explicit allow-list of globals (never ``weights_only=False``). The
framework-specific lists live in :mod:`effvit_plugins.mm.compat` and :mod:`effvit_plugins.detectron2.checkpoint`.
"""
from __future__ import annotations

import importlib
import os
import pickle
import zipfile
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Sequence

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


# Globals that numpy arrays / scalars and standard containers pickle with: safe to rebuild (no code runs).
NUMPY_GLOBALS = frozenset({
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype",
})
NUMPY_PREFIXES = ("numpy.dtypes.",)
CONTAINER_GLOBALS = frozenset({"collections.OrderedDict", "collections.defaultdict", "builtins.set",
                               "builtins.frozenset"})


def _resolve_global(name: str):
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        if module.startswith("numpy.core"):  # numpy 2 renamed numpy.core -> numpy._core
            return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), attr)
        raise


def load_allowlisted(filename: str, allowed: Collection[str], allowed_prefixes: Sequence[str] = (),
                     replacements: Optional[Mapping[str, Callable]] = None, map_location: Any = "cpu",
                     kind: str = "checkpoint", hint: str = "") -> Any:
    """``torch.load(filename, weights_only=True)`` that also accepts the globals named in ``allowed`` (full names
    such as ``"numpy.ndarray"``) or starting with one of ``allowed_prefixes``.

    The globals the file needs are listed first (``torch.serialization.get_unsafe_globals_in_checkpoint``); if any
    is outside the allow-list nothing is unpickled and a :class:`CheckpointError` names them (plus ``hint``).
    ``replacements`` maps a global name to the restricted callable that stands in for it while unpickling (e.g. a
    ``getattr`` that only resolves known attributes). ``kind`` names the file kind in messages.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    refused = [g for g in needed if g not in allowed and not g.startswith(tuple(allowed_prefixes))]
    if refused:
        raise CheckpointError(
            f"Refusing to unpickle {filename}: it needs globals outside the allow-list of {kind}s "
            f"({', '.join(refused)}).{' ' + hint if hint else ''}")
    replacements = replacements or {}
    safe = [(replacements[g], g) if g in replacements else _resolve_global(g) for g in needed]
    if any(g.startswith("numpy.") for g in needed):
        # dtype *instances* are rebuilt with their concrete class (numpy.dtypes.Float64DType, ...), which the
        # checkpoint does not list as a global
        import numpy.dtypes

        safe += [c for c in vars(numpy.dtypes).values() if isinstance(c, type)]
    with torch.serialization.safe_globals(safe):
        return torch.load(filename, map_location=map_location, weights_only=True)
