"""Compatibility of mmengine 0.10.7 with torch >= 2.6 (``torch.load(weights_only=True)`` by default).

mmengine's local checkpoint loader calls ``torch.load`` without ``weights_only``. Runner checkpoints (what
``tools/train.py`` saves, what ``--resume`` and ``tools/test.py`` read) contain, besides tensors, the message
hub's ``HistoryBuffer`` objects and numpy arrays/scalars, so they fail to load on torch 2.13.

We keep ``weights_only=True`` and extend it with an allow-list: the loader lists the globals a checkpoint
needs (``torch.serialization.get_unsafe_globals_in_checkpoint``) and only loads if every one of them is on the
list below (mmengine's HistoryBuffer, numpy's array/scalar reconstructors and dtypes). Anything else is refused
with an explanation; nothing is ever unpickled with ``weights_only=False``.

mmengine's ``HistoryBuffer`` also pickles its class-level table of statistics methods (``min``/``max``/...) as
``getattr(HistoryBuffer, 'min')``. A free ``getattr`` would allow arbitrary code, so ``builtins.getattr`` is
mapped to :func:`_history_buffer_getattr`, which resolves only HistoryBuffer's registered statistics methods.
Checkpoints saved after ``import effvit_plugins`` omit that table altogether (``HistoryBuffer.__setstate__``
rebuilds it on load, and custom methods are re-registered when their module is imported), so nothing is lost.
"""
from __future__ import annotations

import importlib
import os
import pickle

import torch

ALLOWED_GLOBALS = {
    "mmengine.logging.history_buffer.HistoryBuffer",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
    "collections.OrderedDict",
    "collections.defaultdict",
    "builtins.set",
    "builtins.getattr",  # restricted, see _history_buffer_getattr
    "builtins.frozenset",
}
ALLOWED_PREFIXES = ("numpy.dtypes.",)


def _resolve(name: str):
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        if module.startswith("numpy.core"):  # numpy 2 renamed numpy.core -> numpy._core
            return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), attr)
        raise


def _history_buffer_getattr(obj, name: str):
    """Stand-in for ``builtins.getattr`` while unpickling: only ``HistoryBuffer.<statistics method>``."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and (name in HistoryBuffer._statistics_methods or name in ("min", "max", "current",
                                                                                       "mean")):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"getattr({obj!r}, {name!r}) is not allowed in a runner checkpoint")


def load_runner_checkpoint(filename: str, map_location=None):
    """Load an OpenMMLab runner checkpoint with ``weights_only=True`` plus the allow-listed globals."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    refused = [g for g in needed if g not in ALLOWED_GLOBALS and not g.startswith(ALLOWED_PREFIXES)]
    if refused:
        raise RuntimeError(
            f"Refusing to unpickle {filename}: it needs globals outside the allow-list of runner checkpoints "
            f"({', '.join(refused)}). If you trust this file, extract its tensors with "
            f"torch.load(path, weights_only=False)['state_dict'] and save them alone.")
    allowed = [(_history_buffer_getattr, g) if g == "builtins.getattr" else _resolve(g) for g in needed]
    if any(g.startswith("numpy.") for g in needed):
        # dtype *instances* are rebuilt with their concrete class (numpy.dtypes.Float64DType, ...), which the
        # checkpoint does not list as a global
        import numpy.dtypes

        allowed += [c for c in vars(numpy.dtypes).values() if isinstance(c, type)]
    with torch.serialization.safe_globals(allowed):
        return torch.load(filename, map_location=map_location, weights_only=True)


_PATCHED = False


def _history_buffer_state(self) -> dict:
    return {k: v for k, v in self.__dict__.items() if k != "statistics_methods"}


def patch_mmengine_checkpoint_loading() -> None:
    """Route mmengine's local-file loader (``CheckpointLoader`` fallback scheme) through our loader, and save
    ``HistoryBuffer`` objects in a form that loads with ``weights_only=True``."""
    global _PATCHED
    if _PATCHED:
        return
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", force=True)(load_runner_checkpoint)
    HistoryBuffer.__getstate__ = _history_buffer_state
    _PATCHED = True
