"""OpenMMLab backbones: each core backbone + mmengine ``BaseModule`` (``init_cfg``), registered in mmseg, mmdet,
mmpretrain and our own scope.

``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` loads an official ImageNet/segmentation/detection
checkpoint straight from its original file (converted on the fly by :mod:`effvit_plugins.convert`, read with
``weights_only=True``), one of our converted files, or (with ``prefix='backbone.'``) a full segmentor/detector
checkpoint. A file that does not fully match (nothing matching, wrong shapes, missing or extra tensors) is an
error; see :func:`effvit_plugins.convert.load_backbone_weights` for the tolerated dense-prediction differences.
"""
from __future__ import annotations

import copy
from typing import Optional

from mmengine.logging import print_log
from mmengine.model import BaseModule

from ..convert import load_backbone_weights
from ..models.edgevit import EdgeViTBackbone
from ..models.efficientformer_v1 import EfficientFormerV1Backbone
from ..models.efficientformer_v2 import EfficientFormerV2Backbone
from ..models.efficientvit_mit import EfficientViTMITBackbone
from ..models.efficientvit_msra import EfficientViTMSRABackbone
from .register import register_model

DENSE_LIBS = ("mmseg", "mmdet", "mmpretrain")
_INIT_DOC = """
    OpenMMLab arguments:
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint='official.pth')`` (an official file,
            converted on load) or with ``prefix='backbone.'`` for a full model checkpoint.
        pretrained (str, optional): deprecated shorthand for ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
"""


class PretrainedInitMixin:
    """Shared by every backbone adapter: takes ``init_cfg`` / ``pretrained`` besides the core's arguments and loads
    ``Pretrained`` weights through our converter in ``init_weights`` (other init types go to mmengine)."""

    family: str = ""

    def __init__(self, arch=None, *, init_cfg: Optional[dict] = None, pretrained: Optional[str] = None, **kwargs):
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError(f"{type(self).__name__}: init_cfg and pretrained cannot be specified at the same "
                                 "time; use init_cfg=dict(type='Pretrained', checkpoint=...).")
            init_cfg = dict(type="Pretrained", checkpoint=pretrained)
        super().__init__(arch, **kwargs)
        self.init_cfg = copy.deepcopy(init_cfg)
        self._is_init = False

    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get("type") == "Pretrained":
            if "checkpoint" not in cfg:
                raise ValueError(f"{type(self).__name__}: init_cfg of type 'Pretrained' needs a 'checkpoint' path.")
            name = type(self).__name__
            load_backbone_weights(self, cfg["checkpoint"], self.family, prefix=cfg.get("prefix"),
                                  logger=lambda m: print_log(f"{name}: {m}", logger="current"))
            self._is_init = True
            self._freeze_stages()
        else:
            BaseModule.init_weights(self)


@register_model(*DENSE_LIBS)
class EfficientViTMIT(PretrainedInitMixin, EfficientViTMITBackbone, BaseModule):
    family = "efficientvit_mit"
    __doc__ = EfficientViTMITBackbone.__doc__ + _INIT_DOC


@register_model(*DENSE_LIBS)
class EfficientViTMSRA(PretrainedInitMixin, EfficientViTMSRABackbone, BaseModule):
    family = "efficientvit_msra"
    __doc__ = EfficientViTMSRABackbone.__doc__ + _INIT_DOC


@register_model(*DENSE_LIBS)
class EdgeViT(PretrainedInitMixin, EdgeViTBackbone, BaseModule):
    family = "edgevit"
    __doc__ = EdgeViTBackbone.__doc__ + _INIT_DOC


@register_model(*DENSE_LIBS)
class EfficientFormerV1(PretrainedInitMixin, EfficientFormerV1Backbone, BaseModule):
    family = "efficientformer_v1"
    __doc__ = EfficientFormerV1Backbone.__doc__ + _INIT_DOC


@register_model(*DENSE_LIBS)
class EfficientFormerV2(PretrainedInitMixin, EfficientFormerV2Backbone, BaseModule):
    family = "efficientformer_v2"
    __doc__ = EfficientFormerV2Backbone.__doc__ + _INIT_DOC
