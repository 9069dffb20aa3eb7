"""The backbone builders of the built-in families, registered in Detectron2's ``BACKBONE_REGISTRY``
(``MODEL.BACKBONE.NAME``), written out as Detectron2 projects do (vovnet-detectron2, Mask2Former): three per
family, each one line into the shared code of :mod:`effvit_plugins.detectron2.backbone`, which works for any
registered family:

* ``build_<family>_backbone``: the backbone alone (:func:`~.backbone.build_effvit_backbone`);
* ``build_<family>_fpn_backbone``: backbone + FPN, ``p2``-``p6`` (:func:`~.backbone.build_effvit_fpn_backbone`);
* ``build_<family>_retinanet_fpn_backbone``: backbone + FPN, ``p3``-``p7``
  (:func:`~.backbone.build_effvit_retinanet_fpn_backbone`).

A family defined elsewhere registers its own three the same way (``docs/CONTRIBUTING_MODELS.md``), with
:func:`register_backbone` or Detectron2's ``@BACKBONE_REGISTRY.register()``.
"""
from __future__ import annotations

from typing import Callable

from detectron2.modeling import BACKBONE_REGISTRY

from ..models.spec import same_class
from .backbone import build_effvit_backbone, build_effvit_fpn_backbone, build_effvit_retinanet_fpn_backbone

__all__ = ["register_backbone"]


def register_backbone(fn: Callable) -> Callable:
    """``@BACKBONE_REGISTRY.register()`` with a clear error for a name that is taken (Detectron2's registry only
    asserts): the builder is registered under its function name.

    Raises:
        ValueError: another function is registered under this name (the message names it). The same function
            imported again (e.g. by pytest's importlib mode) is no error.
    """
    name = fn.__name__
    if name in BACKBONE_REGISTRY:
        other = BACKBONE_REGISTRY.get(name)
        if same_class(other, fn):
            return fn
        raise ValueError(
            f"Cannot register the Detectron2 backbone builder {fn.__module__}.{fn.__qualname__}: the name {name!r} "
            f"is already registered in BACKBONE_REGISTRY by {other.__module__}.{other.__qualname__}. Rename the "
            f"builder function (MODEL.BACKBONE.NAME is its name), or import only one of the two modules.")
    BACKBONE_REGISTRY.register(fn)
    return fn


# EfficientViT (MIT)
@register_backbone
def build_efficientvit_mit_backbone(cfg, input_shape):
    return build_effvit_backbone(cfg, input_shape, "efficientvit_mit")


@register_backbone
def build_efficientvit_mit_fpn_backbone(cfg, input_shape):
    return build_effvit_fpn_backbone(cfg, input_shape, "efficientvit_mit")


@register_backbone
def build_efficientvit_mit_retinanet_fpn_backbone(cfg, input_shape):
    return build_effvit_retinanet_fpn_backbone(cfg, input_shape, "efficientvit_mit")


# EfficientViT (MSRA)
@register_backbone
def build_efficientvit_msra_backbone(cfg, input_shape):
    return build_effvit_backbone(cfg, input_shape, "efficientvit_msra")


@register_backbone
def build_efficientvit_msra_fpn_backbone(cfg, input_shape):
    return build_effvit_fpn_backbone(cfg, input_shape, "efficientvit_msra")


@register_backbone
def build_efficientvit_msra_retinanet_fpn_backbone(cfg, input_shape):
    return build_effvit_retinanet_fpn_backbone(cfg, input_shape, "efficientvit_msra")


# EdgeViT
@register_backbone
def build_edgevit_backbone(cfg, input_shape):
    return build_effvit_backbone(cfg, input_shape, "edgevit")


@register_backbone
def build_edgevit_fpn_backbone(cfg, input_shape):
    return build_effvit_fpn_backbone(cfg, input_shape, "edgevit")


@register_backbone
def build_edgevit_retinanet_fpn_backbone(cfg, input_shape):
    return build_effvit_retinanet_fpn_backbone(cfg, input_shape, "edgevit")


# EfficientFormer V1
@register_backbone
def build_efficientformer_v1_backbone(cfg, input_shape):
    return build_effvit_backbone(cfg, input_shape, "efficientformer_v1")


@register_backbone
def build_efficientformer_v1_fpn_backbone(cfg, input_shape):
    return build_effvit_fpn_backbone(cfg, input_shape, "efficientformer_v1")


@register_backbone
def build_efficientformer_v1_retinanet_fpn_backbone(cfg, input_shape):
    return build_effvit_retinanet_fpn_backbone(cfg, input_shape, "efficientformer_v1")


# EfficientFormer V2
@register_backbone
def build_efficientformer_v2_backbone(cfg, input_shape):
    return build_effvit_backbone(cfg, input_shape, "efficientformer_v2")


@register_backbone
def build_efficientformer_v2_fpn_backbone(cfg, input_shape):
    return build_effvit_fpn_backbone(cfg, input_shape, "efficientformer_v2")


@register_backbone
def build_efficientformer_v2_retinanet_fpn_backbone(cfg, input_shape):
    return build_effvit_retinanet_fpn_backbone(cfg, input_shape, "efficientformer_v2")
