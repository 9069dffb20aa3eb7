"""LVIS evaluation on numpy >= 1.24.

``lvis`` 0.5.3 (the LVIS API that mmdet's ``LVISMetric`` and Detectron2's ``LVISEvaluator`` call) accumulates
precision with ``np.float``, an alias numpy removed in 1.24, so every LVIS evaluation ends in
``AttributeError: module 'numpy' has no attribute 'float'``.

The fix is narrow: only the module ``lvis.eval`` gets a view of numpy that also has ``float`` (the builtin, which
is what the alias was). numpy itself is not modified. ``lvis`` is not imported here (it pulls in matplotlib):
:func:`install` patches ``lvis.eval`` if it is already imported and otherwise hooks its import, so the patch
applies whenever and by whomever LVIS evaluation is first imported. ``import effvit_plugins`` installs it (with
mmengine installed, for mmdet's ``LVISMetric``), as does the Detectron2 trainer when it builds an LVIS evaluator;
``EFFVIT_PLUGINS_NO_PATCHES=1`` turns it off (:mod:`effvit_plugins.compat`).
"""
from __future__ import annotations

import importlib.abc
import sys
import types

import numpy

from . import Patch, apply_patches

__all__ = ["PATCH", "install", "is_patched"]

_TARGET = "lvis.eval"


class _NumpyWithFloat(types.ModuleType):
    """numpy as ``lvis.eval`` expects it: every numpy attribute, plus ``float`` (the builtin)."""

    float = float

    def __init__(self):
        super().__init__("numpy", numpy.__doc__)

    def __getattr__(self, name):
        return getattr(numpy, name)


def _needs_patch() -> bool:
    return not hasattr(numpy, "float")


def _patch(module) -> None:
    if _needs_patch() and isinstance(getattr(module, "np", None), types.ModuleType) \
            and not isinstance(module.np, _NumpyWithFloat):
        module.np = _NumpyWithFloat()


def is_patched() -> bool:
    """True when ``lvis.eval`` is imported and sees ``np.float`` (always True on numpy < 1.24)."""
    mod = sys.modules.get(_TARGET)
    return mod is not None and hasattr(mod.np, "float")


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _patch(module)

    def __getattr__(self, name):  # get_source, get_filename, ... of the real loader
        return getattr(self._loader, name)


class _LvisEvalFinder(importlib.abc.MetaPathFinder):
    """Finds ``lvis.eval`` through the other finders and wraps its loader with the patch."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _PatchingLoader):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def _install() -> bool:
    """Patch ``lvis.eval`` now or when it is imported; False when there was nothing to do."""
    if not _needs_patch():
        return False
    changed = False
    if _TARGET in sys.modules and not is_patched():
        _patch(sys.modules[_TARGET])
        changed = True
    if not any(isinstance(f, _LvisEvalFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _LvisEvalFinder())
        changed = True
    return changed


PATCH = Patch("lvis.eval's numpy (np.float, removed in numpy 1.24, which lvis 0.5.3 evaluates with)", _install)


def install() -> bool:
    """Make ``lvis.eval`` work on this numpy (idempotent; nothing to do on numpy < 1.24 or with
    ``EFFVIT_PLUGINS_NO_PATCHES=1``). True when it changed something."""
    return bool(apply_patches(PATCH))
