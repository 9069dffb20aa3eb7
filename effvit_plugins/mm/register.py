"""Registration of every OpenMMLab module we provide, in one place.

Each class is registered in our own ``effvit_plugins`` scope and, under the same plain name, in the MODELS registry
of each installed downstream library that can use it:

* for every model family (every :class:`~effvit_plugins.models.spec.FamilySpec`: the built-in ones and any
  registered later with :func:`~effvit_plugins.models.spec.register_family`), :func:`register_family_modules`
  registers

  - the backbone ``spec.name`` (:func:`effvit_plugins.mm.backbones.backbone_adapter`) in mmseg, mmdet and
    mmpretrain;
  - the ImageNet head ``spec.head_name`` = ``spec.name + 'ClsHead'`` (:func:`effvit_plugins.mm.cls_heads.head_adapter`;
    families with a ``cls_head``) in mmpretrain;

  ``python -c "from effvit_plugins.models.spec import families; print([(s.name, s.head_name) for s in
  families()])"`` lists them;
* the hand-written modules, decorated with :func:`register_model` where they are defined:

  =========================  =====================================  ==================
  name                       kind                                   registered in
  =========================  =====================================  ==================
  EfficientViTMSRAFPN        neck, upsampling FPN (official MSRA)   mmdet, mmseg
  EfficientViTMITSegHead     mmseg decode head (official SegHead)   mmseg
  =========================  =====================================  ==================

mmpretrain already registers ``EfficientFormer`` (V1) and ``EfficientFormerClsHead``; ours are named V1/V2 so
both coexist. A name already taken by another package is an error, never silently skipped (also for a family
registered at run time).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Dict, Sequence, Tuple

from ..models.spec import FamilySpec, on_register, same_class
from ..registry import MODELS as OWN_MODELS

BACKBONE_LIBS = ("mmseg", "mmdet", "mmpretrain")
HEAD_LIBS = ("mmpretrain",)
_DONE = False
_MADE: Dict[Tuple[str, str], type] = {}  # (module, name) -> class made by module_class


def _downstream_registries(names):
    regs = []
    for lib in names:
        try:
            regs.append(importlib.import_module(f"{lib}.registry").MODELS)
        except ImportError:
            pass
    return regs


def _register(cls, libs):
    name = cls.__name__
    for reg in [OWN_MODELS] + _downstream_registries(libs):
        existing = reg.module_dict.get(name)
        if existing is not None and not same_class(existing, cls):
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


def module_class(module_name: str, name: str, bases: Sequence[type], doc: str) -> type:
    """A class made at run time that behaves as if written in ``module_name``: an attribute of that module, with
    ``__module__`` / ``__qualname__`` pointing there (so it imports and pickles by name). Made once per name: a
    second call for the same name returns the class already there if it has the same bases (the same family).

    Raises:
        ValueError: the module already has another object under ``name``.
    """
    module = sys.modules[module_name]
    existing = getattr(module, name, None)
    if existing is not None:
        if _MADE.get((module_name, name)) is not existing:
            raise ValueError(f"Cannot make the adapter class {name!r} in {module_name}: the module already defines "
                             f"that name. Give the model family another name.")
        if existing.__bases__ == tuple(bases):
            return existing
    cls = types.new_class(name, tuple(bases), exec_body=lambda ns: ns.update(
        __module__=module_name, __qualname__=name, __doc__=doc))
    setattr(module, name, cls)
    _MADE[(module_name, name)] = cls
    return cls


def register_family_modules(spec: FamilySpec) -> None:
    """Make and register the OpenMMLab classes of one family (see the module docstring)."""
    from .backbones import backbone_adapter

    _register(backbone_adapter(spec), BACKBONE_LIBS)
    if spec.cls_head is not None and importlib.util.find_spec("mmpretrain") is not None:
        from .cls_heads import head_adapter

        _register(head_adapter(spec), HEAD_LIBS)


def unregister_family_modules(spec: FamilySpec) -> None:
    """Remove the OpenMMLab classes made for a family from the registries and their modules (the family was
    forgotten with :func:`~effvit_plugins.models.spec.unregister_family`)."""
    for (module_name, name), cls in list(_MADE.items()):
        if name not in (spec.name, spec.head_name):
            continue
        for reg in [OWN_MODELS] + _downstream_registries(BACKBONE_LIBS + HEAD_LIBS):
            if reg.module_dict.get(name) is cls:
                del reg.module_dict[name]
        if getattr(sys.modules[module_name], name, None) is cls:
            delattr(sys.modules[module_name], name)
        del _MADE[(module_name, name)]


def register_all_modules() -> None:
    """Register the hand-written modules (importing their modules runs the decorators) and the modules of every
    model family, now and whenever a family is registered later."""
    global _DONE
    if _DONE:
        return
    from . import necks  # noqa: F401
    if importlib.util.find_spec("mmseg") is not None:
        from . import seg_heads  # noqa: F401
    on_register(register_family_modules, unregister_family_modules)
    importlib.import_module("..apis", __package__).register_mmpretrain_models(missing_ok=True)  # names in mmpretrain
    _DONE = True
