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
``PATH`` may be a URL or an mmengine model-zoo name (:func:`effvit_plugins.checkpoint.resolve_checkpoint`).

The base-config pitfall: a backbone swapped into an mmdet / mmseg config made for ResNet inherits ResNet's weights
and arguments -- mmseg's ``EncoderDecoder`` copies ``model.pretrained`` (``'open-mmlab://resnet50_v1c'`` in mmseg's
bases) into the backbone's ``pretrained``; mmdet's bases put ``init_cfg=dict(type='Pretrained',
checkpoint='torchvision://resnet50')`` and ``depth=50, style=...`` into the backbone dict, into which a
``backbone=dict(type=..., ...)`` override merges. Such weights (an mmengine model-zoo name, recognised before
anything is downloaded, or a file whose keys fit none of our families' layouts) and such arguments are errors that
say where they came from and what to write instead (``docs/your_config.md``).
"""
from __future__ import annotations

import copy
import inspect
from typing import Optional

from mmengine.logging import print_log
from mmengine.model import BaseModule

from ..checkpoint import ForeignCheckpointError
from ..convert import load_backbone_weights
from ..models.spec import FamilySpec, family_of, find_variant
from .register import module_class

_INIT_DOC = """
    OpenMMLab arguments:
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint='official.pth')`` (an official file,
            converted on load; a local path or a URL) or with ``prefix='backbone.'`` for a full model checkpoint.
        pretrained (str, optional): deprecated shorthand for ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
"""


DOC = "docs/your_config.md"


class PretrainedInitMixin:
    """Shared by every backbone adapter: takes ``init_cfg`` / ``pretrained`` besides the core's arguments and loads
    ``Pretrained`` weights through our converter in ``init_weights`` (other init types go to mmengine); the family
    is that of the core backbone the class derives from. Arguments and weights inherited from a ResNet base config
    are errors naming their origin (see the module docstring)."""

    def __init__(self, arch=None, *, init_cfg: Optional[dict] = None, pretrained: Optional[str] = None, **kwargs):
        name = type(self).__name__
        self._check_arguments(kwargs, init_cfg)
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError(f"{name}: init_cfg and pretrained cannot be specified at the same time; use "
                                 f"init_cfg=dict(type='Pretrained', checkpoint=...). {self._origin(pretrained, True, arch)}")
            init_cfg = dict(type="Pretrained", checkpoint=pretrained)
        super().__init__(arch, **kwargs)
        self.init_cfg = copy.deepcopy(init_cfg)
        self._is_init = False
        self._weights_from_pretrained = pretrained is not None
        self._arch_name = arch if isinstance(arch, str) else None

    def _check_arguments(self, kwargs: dict, init_cfg) -> None:
        """Arguments the core does not take: the usual cause is a base config's backbone dict merged into ours."""
        params = inspect.signature(family_of(self).backbone).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        unknown = [k for k in kwargs if k not in params]
        if not unknown:
            return
        name = type(self).__name__
        inherited = ""
        if isinstance(init_cfg, dict) and init_cfg.get("checkpoint"):
            inherited = (f" Its init_cfg (checkpoint={init_cfg['checkpoint']!r}) most likely came the same way: it "
                         "would load the base model's weights.")
        raise TypeError(
            f"{name} got arguments it does not take: {', '.join(unknown)} (it takes "
            f"{', '.join(k for k in params if k != 'self')}, init_cfg, pretrained). Arguments like these come from "
            f"the base config's backbone dict (mmdet's / mmseg's ResNet: depth, num_stages, style, norm_cfg, ...), "
            f"into which backbone=dict(type={name!r}, ...) merges.{inherited} Fix: replace the base's backbone "
            f"dict whole with backbone=dict(_delete_=True, type={name!r}, arch=..., ...) (see {DOC}).")

    def _origin(self, checkpoint: str, from_pretrained: bool, arch) -> str:
        """Where ``checkpoint`` came from and what to write instead."""
        spec = family_of(self)
        name = type(self).__name__
        known = isinstance(arch, str) and arch.lower() in {k.lower() for k in spec.arch_settings}
        official = spec.weights_file(find_variant(spec, arch)) if known else None
        ours = (f"init_cfg=dict(type='Pretrained', checkpoint=<path or URL of {official or 'the official file'}>)"
                if spec.imagenet_weights else
                f"no init_cfg (no official {spec.title} ImageNet weights were released) or one of your own files")
        if from_pretrained:
            return (f"pretrained={checkpoint!r} reached {name} as its `pretrained` argument: mmseg's "
                    "EncoderDecoder copies the segmentor's model.pretrained into the backbone, and mmseg's base "
                    "configs set it for their ResNet (e.g. 'open-mmlab://resnet50_v1c'). Fix: model=dict("
                    f"pretrained=None, backbone=dict(...)) in your config, and give {name} {ours} "
                    f"in the backbone dict (see {DOC}).")
        return (f"It is the backbone's init_cfg; if you did not write it, it was inherited from the base config's "
                "backbone dict (mmdet's bases set init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')"
                f" for their ResNet, and backbone=dict(type={name!r}, ...) merges into that dict). Fix: "
                f"backbone=dict(_delete_=True, type={name!r}, ...) or init_cfg=None, and for {spec.title} weights "
                f"{ours} (see {DOC}).")

    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get("type") == "Pretrained":
            if "checkpoint" not in cfg:
                raise ValueError(f"{type(self).__name__}: init_cfg of type 'Pretrained' needs a 'checkpoint' path.")
            name = type(self).__name__
            try:
                load_backbone_weights(self, cfg["checkpoint"], family_of(self).key, prefix=cfg.get("prefix"),
                                      logger=lambda m: print_log(f"{name}: {m}", logger="current"))
            except ForeignCheckpointError as e:
                raise ForeignCheckpointError(
                    f"{name}: {e} {self._origin(cfg['checkpoint'], self._weights_from_pretrained, self._arch_name)}") from None
            self._is_init = True
            self._freeze_stages()
        else:
            BaseModule.init_weights(self)


def backbone_adapter(spec: FamilySpec) -> type:
    """The OpenMMLab backbone class of ``spec`` (``effvit_plugins.mm.backbones.<spec.name>``, made once)."""
    return module_class(__name__, spec.name, (PretrainedInitMixin, spec.backbone, BaseModule),
                        (spec.backbone.__doc__ or "") + _INIT_DOC)
