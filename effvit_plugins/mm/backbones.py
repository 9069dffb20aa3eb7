"""OpenMMLab backbones: for every model family, the class ``spec.name`` = :class:`PretrainedInitMixin` + the core
backbone (``spec.backbone``) + mmengine ``BaseModule`` (``init_cfg``), registered in mmseg, mmdet, mmpretrain and our
own scope by :mod:`effvit_plugins.mm.register`. The classes are made by :func:`backbone_adapter` when the family is
registered (built-in families at ``import effvit_plugins``, others when they call ``register_family``) and are
attributes of this module, so they import by name (``from effvit_plugins.mm.backbones import <spec.name>``)
and pickle.

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
from ..models.spec import FamilySpec, family_of
from .register import module_class

_INIT_DOC = """
    OpenMMLab arguments:
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint='official.pth')`` (an official file,
            converted on load) or with ``prefix='backbone.'`` for a full model checkpoint.
        pretrained (str, optional): deprecated shorthand for ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
"""


class PretrainedInitMixin:
    """Shared by every backbone adapter: takes ``init_cfg`` / ``pretrained`` besides the core's arguments and loads
    ``Pretrained`` weights through our converter in ``init_weights`` (other init types go to mmengine); the family
    is that of the core backbone the class derives from."""

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
            load_backbone_weights(self, cfg["checkpoint"], family_of(self).key, prefix=cfg.get("prefix"),
                                  logger=lambda m: print_log(f"{name}: {m}", logger="current"))
            self._is_init = True
            self._freeze_stages()
        else:
            BaseModule.init_weights(self)


def backbone_adapter(spec: FamilySpec) -> type:
    """The OpenMMLab backbone class of ``spec`` (``effvit_plugins.mm.backbones.<spec.name>``, made once)."""
    return module_class(__name__, spec.name, (PretrainedInitMixin, spec.backbone, BaseModule),
                        (spec.backbone.__doc__ or "") + _INIT_DOC)
