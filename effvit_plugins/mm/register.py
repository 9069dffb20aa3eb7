"""Registration in one place.

Every class is registered in our own ``effvit_plugins`` scope and, under the same plain name, in the MODELS
registry of each installed downstream library that can use it:

=========================  =====================================  =======================================
name                       kind                                   registered in
=========================  =====================================  =======================================
EfficientViTMIT            backbone, EfficientViT (MIT) B0-B3/L0-L3  mmseg, mmdet, mmpretrain, effvit_plugins
EfficientViTMSRA           backbone, EfficientViT (MSRA) M0-M5    mmseg, mmdet, mmpretrain, effvit_plugins
EdgeViT                    backbone, EdgeViT XXS/XS/S             mmseg, mmdet, mmpretrain, effvit_plugins
EfficientFormerV1          backbone, EfficientFormer L1/L3/L7     mmseg, mmdet, mmpretrain, effvit_plugins
EfficientFormerV2          backbone, EfficientFormer V2 S0-S2/L   mmseg, mmdet, mmpretrain, effvit_plugins
EfficientViTMITSegHead     mmseg decode head (official SegHead)   mmseg, effvit_plugins
EfficientViTMITClsHead     ImageNet head (official)               mmpretrain, effvit_plugins
EfficientViTMSRAClsHead    ImageNet head (official)               mmpretrain, effvit_plugins
EdgeViTClsHead             ImageNet head (official)               mmpretrain, effvit_plugins
EfficientFormerV1ClsHead   ImageNet head with distillation head   mmpretrain, effvit_plugins
EfficientFormerV2ClsHead   ImageNet head with distillation head   mmpretrain, effvit_plugins
=========================  =====================================  =======================================

mmpretrain already registers ``EfficientFormer`` (V1) and ``EfficientFormerClsHead``; ours are named V1/V2 so
both coexist.
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


def _fixed(cls, name: str, **fixed):
    """Subclass of ``cls`` named ``name`` with some constructor arguments fixed."""

    def __init__(self, *args, **kwargs):
        for k, v in fixed.items():
            if k in kwargs and kwargs[k] != v:
                raise ValueError(f"{name} always uses {k}={v!r}.")
            kwargs[k] = v
        cls.__init__(self, *args, **kwargs)

    return type(name, (cls,), {"__init__": __init__, "__module__": cls.__module__, "__doc__": cls.__doc__})


def register_all_modules() -> None:
    global _DONE
    if _DONE:
        return
    from ..models import edgevit, efficientformer, efficientvit_mit, efficientvit_msra
    from .backbones import make_backbone_adapter
    from .compat import patch_mmengine_checkpoint_loading

    patch_mmengine_checkpoint_loading()
    dense = ("mmseg", "mmdet", "mmpretrain")
    v1 = [k for k, v in efficientformer.ARCH_SETTINGS.items() if v["version"] == 1]
    v2 = [k for k, v in efficientformer.ARCH_SETTINGS.items() if v["version"] == 2]
    backbones = [
        make_backbone_adapter(efficientvit_mit.EfficientViTMITBackbone, "EfficientViTMIT", "efficientvit_mit"),
        make_backbone_adapter(efficientvit_msra.EfficientViTMSRABackbone, "EfficientViTMSRA", "efficientvit_msra"),
        make_backbone_adapter(edgevit.EdgeViTBackbone, "EdgeViT", "edgevit"),
        make_backbone_adapter(efficientformer.EfficientFormerBackbone, "EfficientFormerV1", "efficientformer", v1),
        make_backbone_adapter(efficientformer.EfficientFormerBackbone, "EfficientFormerV2", "efficientformer", v2),
    ]
    for cls in backbones:
        _register(cls, dense)
    from . import necks  # noqa: F401  (registers EfficientViTMSRAFPN in mmdet / mmseg)
    try:
        from .seg_heads import EfficientViTMITSegHead
    except ImportError:  # mmseg not installed
        pass
    else:
        _register(EfficientViTMITSegHead, ("mmseg",))
    try:
        from .cls_heads import make_cls_head_adapter
    except ImportError:  # mmpretrain not installed
        pass
    else:
        heads = [
            make_cls_head_adapter(efficientvit_mit.EfficientViTMITClsHead, "EfficientViTMITClsHead"),
            make_cls_head_adapter(efficientvit_msra.EfficientViTMSRAClsHead, "EfficientViTMSRAClsHead"),
            make_cls_head_adapter(edgevit.EdgeViTClsHead, "EdgeViTClsHead"),
            _fixed(make_cls_head_adapter(efficientformer.EfficientFormerClsHead, "_EfficientFormerClsHead"),
                   "EfficientFormerV1ClsHead", version=1),
            _fixed(make_cls_head_adapter(efficientformer.EfficientFormerClsHead, "_EfficientFormerClsHead"),
                   "EfficientFormerV2ClsHead", version=2),
        ]
        for cls in heads:
            _register(cls, ("mmpretrain",))
    _DONE = True
