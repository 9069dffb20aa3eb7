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

Both changes are :data:`PATCH`, applied by ``import effvit_plugins`` unless ``EFFVIT_PLUGINS_NO_PATCHES=1``
(:mod:`effvit_plugins.compat`).
"""
from __future__ import annotations

import pickle

from ..checkpoint import CONTAINER_GLOBALS, NUMPY_GLOBALS, NUMPY_PREFIXES, load_allowlisted
from ..compat import Patch

ALLOWED_GLOBALS = NUMPY_GLOBALS | CONTAINER_GLOBALS | {
    "mmengine.logging.history_buffer.HistoryBuffer",
    "builtins.getattr",  # restricted, see _history_buffer_getattr
}
ALLOWED_PREFIXES = NUMPY_PREFIXES


def _history_buffer_getattr(obj, name: str):
    """Stand-in for ``builtins.getattr`` while unpickling: only ``HistoryBuffer.<statistics method>``."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and (name in HistoryBuffer._statistics_methods or name in ("min", "max", "current",
                                                                                       "mean")):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"getattr({obj!r}, {name!r}) is not allowed in a runner checkpoint")


def load_runner_checkpoint(filename: str, map_location=None):
    """Load an OpenMMLab runner checkpoint with ``weights_only=True`` plus the allow-listed globals."""
    return load_allowlisted(
        filename, ALLOWED_GLOBALS, ALLOWED_PREFIXES, replacements={"builtins.getattr": _history_buffer_getattr},
        map_location=map_location, kind="runner checkpoint",
        hint="If you trust this file, extract its tensors with torch.load(path, weights_only=False)['state_dict'] "
             "and save them alone.")


_PATCHED = False


def _history_buffer_state(self) -> dict:
    return {k: v for k, v in self.__dict__.items() if k != "statistics_methods"}


def patch_mmengine_checkpoint_loading() -> bool:
    """Route mmengine's local-file loader (``CheckpointLoader`` fallback scheme) through our loader, and save
    ``HistoryBuffer`` objects in a form that loads with ``weights_only=True``. False when already done."""
    global _PATCHED
    if _PATCHED:
        return False
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", force=True)(load_runner_checkpoint)
    HistoryBuffer.__getstate__ = _history_buffer_state
    _PATCHED = True
    return True


PATCH = Patch("mmengine's checkpoint loader for local files (torch.load with weights_only=True plus an allow-list, "
              "so runner checkpoints load on torch >= 2.6) and HistoryBuffer's pickling",
              patch_mmengine_checkpoint_loading)
