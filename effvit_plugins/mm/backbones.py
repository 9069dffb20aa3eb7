"""OpenMMLab adapters for the backbone cores: the core class + mmengine ``BaseModule`` (``init_cfg``).

``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` loads an official ImageNet/segmentation checkpoint
straight from its original file (converted on the fly by :mod:`effvit_plugins.convert`, read with
``weights_only=True``), one of our converted files, or (with ``prefix='backbone.'``) a full
segmentor/detector checkpoint. Zero matching keys or wrong shapes raise an error.
"""
from __future__ import annotations

import copy

from mmengine.logging import print_log
from mmengine.model import BaseModule

from ..convert import load_backbone_weights


def make_backbone_adapter(core_cls, name: str, family: str, archs=None):
    """Create ``name`` = ``core_cls`` + BaseModule, with pretrained loading through our converter.

    ``archs`` restricts the accepted variant names (e.g. EfficientFormer V1 vs V2 share one core).
    """

    def __init__(self, *args, init_cfg=None, pretrained=None, **kwargs):
        arch = kwargs.get("arch", args[0] if args else None)
        if archs is not None and isinstance(arch, str) and arch.lower() not in archs:
            raise ValueError(f"Unknown {name} variant {arch!r}. Valid variants: {', '.join(archs)}.")
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError("init_cfg and pretrained cannot be specified at the same time; "
                                 "use init_cfg=dict(type='Pretrained', checkpoint=...).")
            init_cfg = dict(type="Pretrained", checkpoint=pretrained)
        core_cls.__init__(self, *args, **kwargs)
        self.init_cfg = copy.deepcopy(init_cfg)
        self._is_init = False

    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get("type") == "Pretrained":
            if "checkpoint" not in cfg:
                raise ValueError(f"{name}: init_cfg of type 'Pretrained' needs a 'checkpoint' path.")
            load_backbone_weights(self, cfg["checkpoint"], family, prefix=cfg.get("prefix"),
                                  logger=lambda m: print_log(f"{name}: {m}", logger="current"))
            self._is_init = True
            self._freeze_stages()
        else:
            BaseModule.init_weights(self)

    doc = (core_cls.__doc__ or "") + (
        "\n        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint='official.pth')``"
        " (official file, converted on load) or with ``prefix='backbone.'`` for a full model checkpoint.\n")
    return type(name, (core_cls, BaseModule), {"__init__": __init__, "init_weights": init_weights,
                                               "__doc__": doc, "__module__": __name__, "FAMILY": family})
