"""Registration in one place.

Every class is registered in our own ``effvit_plugins`` scope and, under the same plain name, in the MODELS
registry of each installed downstream library that can use it:

=============================  ==========================  =======================================
name                           kind                        registered in
=============================  ==========================  =======================================
EfficientViTMIT                backbone (MIT B0-B3, L0-L3)  mmseg, mmdet, mmpretrain, effvit_plugins
EfficientViTMITSegHead         mmseg decode head            mmseg, effvit_plugins
=============================  ==========================  =======================================
"""
from __future__ import annotations

import importlib

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


def _register(cls, libs):
    for reg in [OWN_MODELS] + _downstream_registries(libs):
        if cls.__name__ not in reg.module_dict:
            reg.register_module(module=cls)


def register_all_modules() -> None:
    global _DONE
    if _DONE:
        return
    from ..models.efficientvit_mit import EfficientViTMITBackbone
    from .backbones import make_backbone_adapter
    from .compat import patch_mmengine_checkpoint_loading

    patch_mmengine_checkpoint_loading()
    dense = ("mmseg", "mmdet", "mmpretrain")
    _register(make_backbone_adapter(EfficientViTMITBackbone, "EfficientViTMIT", "efficientvit_mit"), dense)
    try:
        from .seg_heads import EfficientViTMITSegHead
    except ImportError:  # mmseg not installed
        pass
    else:
        _register(EfficientViTMITSegHead, ("mmseg",))
    _DONE = True
