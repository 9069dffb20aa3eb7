"""Registration: the ``register_model`` decorator and the list of everything it registers.

Every adapter class is decorated with :func:`register_model` where it is defined (``mm/backbones.py``,
``mm/necks.py``, ``mm/seg_heads.py``, ``mm/cls_heads.py``); :func:`register_all_modules` (run by
``import effvit_plugins``) imports those modules. Each class is registered in our own ``effvit_plugins`` scope and,
under the same plain name, in the MODELS registry of each installed downstream library that can use it:

=========================  =====================================  =======================================
name                       kind                                   registered in
=========================  =====================================  =======================================
EfficientViTMIT            backbone, EfficientViT (MIT) B0-B3/L0-L3  mmseg, mmdet, mmpretrain, effvit_plugins
EfficientViTMSRA           backbone, EfficientViT (MSRA) M0-M5    mmseg, mmdet, mmpretrain, effvit_plugins
EdgeViT                    backbone, EdgeViT XXS/XS/S             mmseg, mmdet, mmpretrain, effvit_plugins
EfficientFormerV1          backbone, EfficientFormer L1/L3/L7     mmseg, mmdet, mmpretrain, effvit_plugins
EfficientFormerV2          backbone, EfficientFormer V2 S0-S2/L   mmseg, mmdet, mmpretrain, effvit_plugins
EfficientViTMSRAFPN        neck, upsampling FPN (official MSRA)   mmdet, mmseg, effvit_plugins
EfficientViTMITSegHead     mmseg decode head (official SegHead)   mmseg, effvit_plugins
EfficientViTMITClsHead     ImageNet head (official)               mmpretrain, effvit_plugins
EfficientViTMSRAClsHead    ImageNet head (official)               mmpretrain, effvit_plugins
EdgeViTClsHead             ImageNet head (official)               mmpretrain, effvit_plugins
EfficientFormerV1ClsHead   ImageNet head with distillation head   mmpretrain, effvit_plugins
EfficientFormerV2ClsHead   ImageNet head with distillation head   mmpretrain, effvit_plugins
=========================  =====================================  =======================================

mmpretrain already registers ``EfficientFormer`` (V1) and ``EfficientFormerClsHead``; ours are named V1/V2 so
both coexist. A name already taken by another package is an error, never silently skipped.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging

from ..registry import MODELS as OWN_MODELS

_DONE = False


def _downstream_registries(names):
    regs = []
    for lib in names:
        try:
            regs.append(importlib.import_module(f"{lib}.registry").MODELS)
        except ImportError:
            pass
    return regs


def _same_class(a, b) -> bool:
    """Two class objects of the same definition (a module imported twice, e.g. by pytest's importlib mode)."""
    return a is b or (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", None), getattr(b, "__qualname__", None))


def _register(cls, libs):
    name = cls.__name__
    for reg in [OWN_MODELS] + _downstream_registries(libs):
        existing = reg.module_dict.get(name)
        if existing is not None and not _same_class(existing, cls):
            raise KeyError(
                f"effvit_plugins cannot register {name!r} in the {reg.scope}::{reg.name} registry: that name is "
                f"already taken by {existing.__module__}.{existing.__qualname__}. Another package registers a "
                f"model with the same name; import only one of them, or use ours through its scoped name "
                f"type='effvit_plugins.{name}'.")
        reg.register_module(module=cls, force=existing is not None)


def register_model(*libs: str):
    """Class decorator: register ``cls`` under its own name in our ``effvit_plugins`` scope and in the MODELS
    registry of each installed library in ``libs`` (``'mmseg'``, ``'mmdet'``, ``'mmpretrain'``).

    A name already taken by a different class is an error (never silently skipped)."""

    def deco(cls):
        _register(cls, libs)
        return cls

    return deco


class _MMLoggerBridge(logging.Handler):
    """Forwards the framework-free cores' log records (logger ``effvit_plugins``) to mmengine's current logger, so
    that e.g. the one-line report of resized attention-bias tables lands in the run's log."""

    def emit(self, record):
        from mmengine.logging import print_log

        print_log(record.getMessage(), logger="current", level=record.levelno)


def register_all_modules() -> None:
    """Import every adapter module (the decorators register the classes), route the cores' logs to mmengine and
    make mmengine load runner checkpoints with ``weights_only=True`` on torch >= 2.6."""
    global _DONE
    if _DONE:
        return
    from .compat import patch_mmengine_checkpoint_loading

    patch_mmengine_checkpoint_loading()
    core_logger = logging.getLogger("effvit_plugins")
    if not any(isinstance(h, _MMLoggerBridge) for h in core_logger.handlers):
        core_logger.addHandler(_MMLoggerBridge())
        core_logger.setLevel(logging.INFO)
        core_logger.propagate = False
    from . import backbones, necks  # noqa: F401
    for module, lib in ((".seg_heads", "mmseg"), (".cls_heads", "mmpretrain")):
        if importlib.util.find_spec(lib) is not None:
            importlib.import_module(module, __package__)
    _DONE = True
