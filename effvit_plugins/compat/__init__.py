"""Repairs of other packages, and the one switch that turns them off (framework-free: standard library only).

A repair is a :class:`Patch`: what it changes (one phrase) and the function applying it, which returns whether it
changed anything (False when already applied or not needed here). :func:`apply_patches` applies patches unless
the environment variable ``EFFVIT_PLUGINS_NO_PATCHES`` is set (to anything but ``''`` / ``0`` / ``false`` /
``no``); the first call in a process that changes something logs ONE line (logger ``effvit_plugins.compat``,
level INFO) naming the changes and the variable. Later calls log nothing.

The repairs (``import effvit_plugins`` applies them all when mmengine is installed, see :mod:`effvit_plugins`):

* :mod:`effvit_plugins.compat.lvis` -- the ``lvis`` package's evaluation on numpy >= 1.24 (framework-free; the
  Detectron2 trainer also applies it when it builds an LVIS evaluator);
* :mod:`effvit_plugins.mm.compat` -- mmengine 0.10.7's runner checkpoints on torch >= 2.6, and its optimizer
  parameter groups under ``compile=True``.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, List, NamedTuple

__all__ = ["ENV_VAR", "Patch", "apply_patches", "patches_enabled"]

ENV_VAR = "EFFVIT_PLUGINS_NO_PATCHES"

logger = logging.getLogger(__name__)
_announced = False


class Patch(NamedTuple):
    what: str  # what it changes, for the log line ("lvis.eval's numpy: ...")
    apply: Callable[[], bool]  # applies it; True when something changed


def patches_enabled() -> bool:
    """False when ``EFFVIT_PLUGINS_NO_PATCHES`` is set (``1``, ``true``, ...)."""
    return os.environ.get(ENV_VAR, "").strip().lower() in ("", "0", "false", "no")


def apply_patches(*patches: Patch) -> List[str]:
    """Apply ``patches`` (unless turned off by ``EFFVIT_PLUGINS_NO_PATCHES``); returns what changed. The first
    call in a process that changes something logs one line saying what."""
    global _announced
    if not patches_enabled():
        return []
    changed = [p.what for p in patches if p.apply()]
    if changed and not _announced:
        _announced = True
        logger.info("effvit_plugins patched %s. Set %s=1 to leave them alone.", "; ".join(changed), ENV_VAR)
    return changed
