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

The same loader also takes over mmengine's schemes for URLs and model-zoo names (``http://``, ``https://``,
``open-mmlab://``, ``openmmlab://``, ``torchvision://``, ``modelzoo://``; what ``load_from=``, ``--resume`` and
mmengine's own ``init_cfg=dict(type='Pretrained')`` read): the file is fetched by
:func:`effvit_plugins.checkpoint.resolve_checkpoint` (the torch hub cache, checked against the hash in its name) and
read as above, where mmengine's ``load_url`` would skip the hash check. Whatever the source, an official checkpoint
of one of our families (:func:`effvit_plugins.convert.detect_family`) is converted to our OpenMMLab layout before
mmengine loads it into the model, so ``load_from=<official ImageNet file>`` works for our mmpretrain classifiers as
``init_cfg`` does for backbones. Files in our layout, runner checkpoints and other models' files pass unchanged.

All of this is :data:`PATCH`, applied by ``import effvit_plugins`` unless ``EFFVIT_PLUGINS_NO_PATCHES=1``
(:mod:`effvit_plugins.compat`).

:data:`COMPILE_PATCH` (applied the same way) makes ``compile=True`` in a config work with ``paramwise_cfg``: the
runner's optimizer constructor builds the optimizer from a ``ConfigDict``, so its parameter groups are
``ConfigDict`` objects, and torch 2.13's dynamo, which mmengine asks to compile ``train_step`` including the
optimizer step, fails on them (``InternalTorchDynamoError: AttributeError: 'UserDefinedDictVariable' object has no
attribute 'items'`` in ``Adam.step``). ``OptimWrapper`` (and its subclasses) turn the groups into plain dicts, the
type ``torch.optim`` itself creates; same keys and values, nothing else changes. It also keeps the message hub's
updates (``MessageHub.update_scalar`` and friends, which ``OptimWrapper`` calls with the gradient norm when a config
clips gradients) out of compilation (``torch.compiler.disable``): traced, ``HistoryBuffer.update`` guarded on the
logged value and recompiled at every iteration (``TORCH_LOGS=recompiles``) until dynamo's recompile limit.
"""
from __future__ import annotations

import pickle

import os
from typing import Any, Mapping

from ..checkpoint import (CONTAINER_GLOBALS, NUMPY_GLOBALS, NUMPY_PREFIXES, REMOTE_PREFIXES, CheckpointError,
                          load_allowlisted, resolve_checkpoint, unwrap_state_dict)
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


def converted_if_official(checkpoint: Any, source: str) -> Any:
    """``checkpoint`` itself, or (an official checkpoint of one of our families, whose layout differs from ours)
    ``{'state_dict': <our OpenMMLab layout>, 'meta': {'converted_from': ..., 'family': ...}}``."""
    from mmengine.logging import print_log

    from ..convert import convert_official, detect_family

    if not isinstance(checkpoint, Mapping):
        return checkpoint
    try:
        sd = unwrap_state_dict(checkpoint)
    except CheckpointError:  # no tensors at all: not a weight file of ours
        return checkpoint
    family = detect_family(sd)
    if family is None:
        return checkpoint
    _, out = convert_official(sd, family)
    if out.keys() == sd.keys():  # already our layout (or a family whose official layout is ours)
        return checkpoint
    print_log(f"{source}: an official {family} checkpoint, converted to the OpenMMLab layout ({len(sd)} -> "
              f"{len(out)} tensors)", logger="current")
    return {"state_dict": out, "meta": {"converted_from": os.path.basename(source), "family": family}}


def load_from_effvit_plugins(filename: str, map_location=None):
    """mmengine's checkpoint loader for local paths, URLs and model-zoo names (see the module docstring). The
    name's tail is what mmengine logs: "Loads checkpoint by effvit_plugins backend"."""
    checkpoint = load_runner_checkpoint(resolve_checkpoint(filename), map_location)
    return converted_if_official(checkpoint, filename)


_PATCHED = False


def _history_buffer_state(self) -> dict:
    return {k: v for k, v in self.__dict__.items() if k != "statistics_methods"}


def patch_mmengine_checkpoint_loading() -> bool:
    """Route mmengine's loaders of local files (``CheckpointLoader``'s fallback scheme), URLs and model-zoo names
    through :func:`load_from_effvit_plugins`, and save ``HistoryBuffer`` objects in a form that loads with
    ``weights_only=True``. False when already done."""
    global _PATCHED
    if _PATCHED:
        return False
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes=("",) + REMOTE_PREFIXES, force=True)(load_from_effvit_plugins)
    HistoryBuffer.__getstate__ = _history_buffer_state
    _PATCHED = True
    return True


PATCH = Patch("mmengine's checkpoint loader for local files, URLs and open-mmlab:// / torchvision:// names "
              "(torch.load with weights_only=True plus an allow-list, so runner checkpoints load on torch >= 2.6; "
              "downloads checked against the hash in their name; our families' official files converted) and "
              "HistoryBuffer's pickling",
              patch_mmengine_checkpoint_loading)


_PARAM_GROUPS_PATCHED = False


def plain_param_groups(optimizer) -> None:
    """Replace ``optimizer``'s parameter groups that are dict subclasses (mmengine's ``ConfigDict``) by plain dicts
    with the same items (in place: the list object, which schedulers and the optimizer hold, stays)."""
    groups = optimizer.param_groups
    for i, group in enumerate(groups):
        if type(group) is not dict:
            groups[i] = dict(group)


def patch_optim_wrapper_param_groups() -> bool:
    """``OptimWrapper.__init__`` followed by :func:`plain_param_groups`, and the message hub's updates outside
    compilation (see the module docstring). False when already done."""
    global _PARAM_GROUPS_PATCHED
    if _PARAM_GROUPS_PATCHED:
        return False
    import torch
    from mmengine.logging import MessageHub
    from mmengine.optim import OptimWrapper

    for name in ("update_scalar", "update_scalars", "update_info", "update_info_dict"):
        method = getattr(MessageHub, name, None)
        if method is not None:
            setattr(MessageHub, name, torch.compiler.disable(method, recursive=True))

    init = OptimWrapper.__init__

    def __init__(self, optimizer, *args, **kwargs):
        init(self, optimizer, *args, **kwargs)
        plain_param_groups(self.optimizer)

    __init__.__wrapped__ = init
    __init__.__doc__ = init.__doc__
    OptimWrapper.__init__ = __init__
    _PARAM_GROUPS_PATCHED = True
    return True


COMPILE_PATCH = Patch("the optimizer's parameter groups as plain dicts, not ConfigDicts (torch.compile of train_step, "
                      "compile=True, fails on those), and the message hub's updates left out of compilation (traced, "
                      "they recompiled at every iteration)", patch_optim_wrapper_param_groups)
