"""Detectron2 backbones over the framework-free cores, and the builder code shared by every family.

Every family's core backbone becomes a Detectron2 :class:`~detectron2.modeling.Backbone` by one mixin
(:class:`D2BackboneMixin`), so the Detectron2 classes have the cores' parameter names (official checkpoints load
through :mod:`effvit_plugins.convert`), their ``frozen_stages`` / ``norm_eval`` / ``with_cp`` /
``drop_path_rate`` behaviour and their any-input-size forward. The class of each registered family
(:mod:`effvit_plugins.models.spec`), built-in or registered later, is made here when the family is registered:
``D2<spec.name>`` (``D2EdgeViT``, ...), an attribute of this module (see :func:`backbone_class`). Feature maps are
named by stride, Detectron2 style: ``res{log2(stride)}`` (stride 2 -> ``res1``, 4 -> ``res2`` ... 32 -> ``res5``,
64 -> ``res6``), the strides being those of the core's ``feature_info``.

A family whose spec sets ``upsample_neck`` (EfficientViT-MSRA: maps at strides 16/32/64 only) gets the official
upsampling FPN from the FPN builders (:class:`UpsampleFPNBackbone`, the framework-free
:class:`~effvit_plugins.models.upsample_fpn.UpsampleFPN` as a Detectron2 backbone): transposed-conv levels down to
stride 4 for Mask R-CNN (``p2``-``p6`` from strides 16-64) and to stride 8 plus a stride-2 conv on the last map for
RetinaNet (``p3``-``p7``), as the official detection configs. The other families use Detectron2's own ``FPN`` with
``LastLevelMaxPool`` (``p2``-``p6``) or ``LastLevelP6P7`` (``p3``-``p7``).

The builders registered in ``BACKBONE_REGISTRY`` (``MODEL.BACKBONE.NAME``) are written out in
:mod:`effvit_plugins.detectron2.builders`, one line each into :func:`build_effvit_backbone`,
:func:`build_effvit_fpn_backbone` and :func:`build_effvit_retinanet_fpn_backbone`, which work for any registered
family. Their options are under ``MODEL.EFFVIT`` (see :func:`effvit_plugins.detectron2.config.add_effvit_config`)
and ``MODEL.FPN``.
"""
from __future__ import annotations

import inspect
import math
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

from ..models.spec import FamilySpec, family_keys, family_of, get_family, on_register
from ..models.upsample_fpn import UpsampleFPN

# (the per-family classes D2<spec.name> are added to __all__ as they are made)
__all__ = ["D2BackboneMixin", "UpsampleFPNBackbone", "backbone_class", "backbone_kwargs", "feature_name",
           "build_effvit_backbone", "build_effvit_fpn_backbone", "build_effvit_retinanet_fpn_backbone"]


def feature_name(stride: int) -> str:
    """Detectron2 name of a backbone map of this stride: ``res{log2(stride)}`` (4 -> ``res2``)."""
    return f"res{int(round(math.log2(stride)))}"


class _Padding:
    """``size_divisibility`` / ``padding_constraints`` of a Detectron2 backbone from ``self._size_divisibility``."""

    _size_divisibility = 0  # (no class-level annotation: TorchScript cannot read postponed ones)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"size_divisibility": self._size_divisibility}


class D2BackboneMixin(_Padding):
    """Detectron2's ``Backbone`` interface on top of a core backbone (used as ``class X(D2BackboneMixin, Core,
    Backbone)``; :func:`backbone_class` gives the class of a registered family).

    Args:
        arch: the variant (``'b1'``, ``'m4'``, ...), as for the core.
        out_features (list[str], optional): maps to return, by name (``res2`` ... see the module docstring); default
            every map of stride >= 4. Returned in the order of increasing stride.
        size_divisibility (int, optional): padding multiple Detectron2 applies to the input batch; default the
            largest returned stride (what lateral connections need; the cores themselves run at any size).
        **kwargs: the core's options (``frozen_stages``, ``norm_eval``, ``with_cp``, ``drop_path_rate``,
            ``in_channels``, ...).

    ``forward(x)`` returns ``{name: NCHW tensor}``; ``output_shape()`` gives channels and stride per name.
    """

    __jit_unused_properties__ = ["family", "out_features", "stage_channels", "stage_strides", "out_channels",
                                 "out_strides", "with_cp"]

    def __init__(self, arch=None, *, out_features: Optional[Sequence[str]] = None,
                 size_divisibility: Optional[int] = None, **kwargs):
        if "out_indices" in kwargs:
            raise TypeError(f"{type(self).__name__}: select the maps with out_features (names), not out_indices.")
        spec = family_of(type(self))
        # the core builds per-output layers for its out_indices only, so the names are resolved before building,
        # from the strides the spec declares (checked against the built core's feature_info below)
        names = [feature_name(s) for s in spec.feature_strides]
        if out_features is None or len(out_features) == 0:
            out_features = [n for n, s in zip(names, spec.feature_strides) if s >= 4]
        out_features = list(out_features)
        unknown = [n for n in out_features if n not in names]
        if unknown or len(set(out_features)) != len(out_features):
            valid = ", ".join(f"{n} (stride {s})" for n, s in zip(names, spec.feature_strides))
            what = f"unknown feature name(s) {unknown}" if unknown else f"a repeated name in {out_features}"
            raise ValueError(f"{type(self).__name__} ({spec.key} {arch}): out_features has {what}. "
                             f"Valid names: {valid}.")
        # the core returns maps in out_indices order; Detectron2 expects increasing stride
        super().__init__(arch, out_indices=tuple(sorted(names.index(n) for n in out_features)), **kwargs)
        strides = [f["reduction"] for f in self.feature_info]
        if strides != list(spec.feature_strides):
            raise ValueError(f"{type(self).__name__}: the {spec.title} backbone has feature maps of strides "
                             f"{strides} (feature_info), but its FamilySpec declares feature_strides="
                             f"{tuple(spec.feature_strides)}. Correct feature_strides in the family's spec.")
        names = [feature_name(s) for s in strides]
        self._out_features = [names[i] for i in self.out_indices]
        self._out_feature_channels = {names[i]: self.feature_info[i]["num_chs"] for i in self.out_indices}
        self._out_feature_strides = {names[i]: strides[i] for i in self.out_indices}
        if size_divisibility is None:
            size_divisibility = max(self._out_feature_strides.values())
        self._size_divisibility = int(size_divisibility)

    @property
    def family(self) -> str:
        """The family key (``'edgevit'``, ...)."""
        return family_of(type(self)).key

    @property
    def out_features(self) -> List[str]:
        return list(self._out_features)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if torch.jit.is_scripting():
            maps = self.select_outputs(self.script_maps(x))
        else:
            maps = super().forward(x)
        out: Dict[str, torch.Tensor] = {}
        for i, name in enumerate(self._out_features):
            out[name] = maps[i]
        return out


def _make_backbone_class(spec: FamilySpec) -> None:
    """``D2<spec.name>(D2BackboneMixin, spec.backbone, Backbone)``, set as an attribute of this module (so it is
    importable by name and picklable). Runs for every registered family
    (:func:`~effvit_plugins.models.spec.on_register`)."""
    name = spec.d2_name
    maps = [feature_name(s) for s in spec.feature_strides]
    doc = f"{spec.title} as a Detectron2 backbone: ``{maps[0]}`` .. ``{maps[-1]}``.\n" + D2BackboneMixin.__doc__
    cls = type(name, (D2BackboneMixin, spec.backbone, Backbone),
               {"__module__": __name__, "__qualname__": name, "__doc__": doc})
    globals()[name] = cls
    if name not in __all__:
        __all__.append(name)


def _forget_backbone_class(spec: FamilySpec) -> None:
    """Remove the class of a family forgotten with :func:`~effvit_plugins.models.spec.unregister_family`."""
    if spec.d2_name in globals():
        del globals()[spec.d2_name]
    if spec.d2_name in __all__:
        __all__.remove(spec.d2_name)


on_register(_make_backbone_class, _forget_backbone_class)


def backbone_class(family: str) -> type:
    """The Detectron2 backbone class of a registered family (``'edgevit'`` -> :class:`D2EdgeViT`).

    Raises:
        ValueError: unknown family (the message lists the valid ones).
    """
    return globals()[get_family(family).d2_name]


class UpsampleFPNBackbone(_Padding, UpsampleFPN, Backbone):
    """The official EfficientViT-MSRA upsampling FPN over a Detectron2 backbone (outputs ``p{log2(stride)}``).

    Args:
        bottom_up (Backbone): e.g. :class:`D2EfficientViTMSRA` (maps ``res4``, ``res5``, ``res6``).
        in_features (list[str]): the maps used, finest first, strides doubling.
        out_channels (int): channels of every level (official: 256).
        finest_stride (int): stride of the finest output; the levels between it and the finest input come from
            2x2 stride-2 transposed convolutions (4 with strides 16-64: two of them, as the official Mask R-CNN).
        num_extra_convs (int): coarser levels after the last input from stride-2 3x3 convs on that input (official
            RetinaNet: 1, giving stride 128).
        norm (str): Detectron2 norm name: ``""`` (official), ``"BN"``, ``"SyncBN"`` or ``"GN"``.

    Parameter names are those of the official neck (``lateral_convs.*``, ``fpn_convs.*``, ``extra_trans_convs.*``,
    ``extra_fpn_convs.*``), so the neck of an official MSRA detector checkpoint loads too.
    """

    def __init__(self, bottom_up: Backbone, in_features: Sequence[str], out_channels: int, finest_stride: int = 4,
                 num_extra_convs: int = 0, norm: str = ""):
        if not isinstance(bottom_up, Backbone):
            raise TypeError(f"UpsampleFPNBackbone: bottom_up must be a Detectron2 Backbone, got {type(bottom_up)}.")
        shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if not in_features or missing:
            raise ValueError(f"UpsampleFPNBackbone: in_features {list(in_features)} must be maps of the bottom-up "
                             f"backbone, which has {list(shapes)}.")
        strides = [shapes[f].stride for f in in_features]
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(f"UpsampleFPNBackbone: the strides of in_features {list(in_features)} ({strides}) must "
                             "double from one map to the next.")
        n_trans = int(round(math.log2(strides[0] / finest_stride)))
        if n_trans < 0 or finest_stride << n_trans != strides[0]:
            raise ValueError(f"UpsampleFPNBackbone: finest_stride={finest_stride} must be the finest input stride "
                             f"({strides[0]}) divided by a power of 2.")
        norm_name = {"": None, "BN": "BN", "SyncBN": "SyncBN", "GN": "GN"}.get(norm, "invalid")
        if norm_name == "invalid":
            raise ValueError(f"UpsampleFPNBackbone: norm must be '', 'BN', 'SyncBN' or 'GN' (MODEL.FPN.NORM), "
                             f"got {norm!r}.")
        super().__init__([shapes[f].channels for f in in_features], out_channels,
                         num_outs=len(in_features) + n_trans + num_extra_convs,
                         add_extra_convs="on_input" if num_extra_convs else False,
                         num_extra_trans_convs=n_trans, norm=norm_name)
        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        out_strides = self.out_strides(strides)
        self._out_features = [f"p{int(round(math.log2(s)))}" for s in out_strides]
        self._out_feature_strides = dict(zip(self._out_features, out_strides))
        self._out_feature_channels = {f: int(out_channels) for f in self._out_features}
        self._size_divisibility = strides[-1]

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.bottom_up(x)
        outs = self.pyramid([feats[f] for f in self.in_features])
        out: Dict[str, torch.Tensor] = {}
        for i, name in enumerate(self._out_features):
            out[name] = outs[i]
        return out


# ---------------------------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------------------------
def _check_family(cfg, family: str) -> None:
    configured = cfg.MODEL.EFFVIT.FAMILY
    if configured and configured != family:
        raise ValueError(
            f"MODEL.EFFVIT.FAMILY is {configured!r} but MODEL.BACKBONE.NAME is {cfg.MODEL.BACKBONE.NAME!r}, a "
            f"{family!r} builder. Use build_{configured}_backbone / _fpn_backbone / _retinanet_fpn_backbone, or "
            f"set MODEL.EFFVIT.FAMILY to {family!r} (valid families: {', '.join(family_keys())}).")


def backbone_kwargs(cfg, family: str) -> dict:
    """Constructor arguments of the family's Detectron2 backbone from ``cfg.MODEL.EFFVIT`` (options the family
    does not have must stay at their defaults; a clear error says so)."""
    try:
        spec = get_family(family)
    except ValueError as e:
        raise ValueError(f"MODEL.EFFVIT.FAMILY: {e}") from None
    _check_family(cfg, family)
    c = cfg.MODEL.EFFVIT
    if not c.ARCH:
        raise ValueError(f"MODEL.EFFVIT.ARCH is not set; the {spec.title} variants are: "
                         f"{', '.join(spec.arch_settings)}.")
    kwargs = dict(out_features=list(c.OUT_FEATURES), frozen_stages=c.FROZEN_STAGES, norm_eval=c.NORM_EVAL,
                  with_cp=bool(c.WITH_CP))
    optional = dict(drop_path_rate=(c.DROP_PATH_RATE, 0.0, "DROP_PATH_RATE"),
                    seg_resolution=(c.SEG_RESOLUTION or None, None, "SEG_RESOLUTION"),
                    layer_scale_init_value=(c.LAYER_SCALE_INIT_VALUE or None, None, "LAYER_SCALE_INIT_VALUE"))
    accepted = inspect.signature(spec.backbone.__init__).parameters
    for arg, (value, default, key) in optional.items():
        if value is None or value == default:
            continue
        if arg not in accepted:
            raise ValueError(f"MODEL.EFFVIT.{key} = {value!r} is not an option of {spec.title} (the "
                             f"official model has no such setting); leave it at its default.")
        kwargs[arg] = value
    return kwargs


def build_effvit_backbone(cfg, input_shape: Optional[ShapeSpec], family: str) -> Backbone:
    """The family's Detectron2 backbone from ``cfg.MODEL.EFFVIT`` (``input_shape.channels`` input channels)."""
    kwargs = backbone_kwargs(cfg, family)
    in_channels = input_shape.channels if input_shape is not None and input_shape.channels else 3
    try:
        return backbone_class(family)(cfg.MODEL.EFFVIT.ARCH, in_channels=in_channels, **kwargs)
    except ValueError as e:
        raise ValueError(f"MODEL.EFFVIT: {e}") from None


def build_effvit_fpn_backbone(cfg, input_shape: Optional[ShapeSpec], family: str) -> Backbone:
    """Backbone + FPN for two-stage detectors / semantic FPN: outputs from stride 4 (``p2``) up, plus one coarser
    level (``p6``: max pooling for Detectron2's FPN; a family with the upsampling neck: its stride-64 stage)."""
    bottom_up = build_effvit_backbone(cfg, input_shape, family)
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    _check_in_features(bottom_up, in_features)
    if get_family(family).upsample_neck:
        return UpsampleFPNBackbone(bottom_up, in_features, cfg.MODEL.FPN.OUT_CHANNELS, finest_stride=4,
                                   norm=cfg.MODEL.FPN.NORM)
    return FPN(bottom_up=bottom_up, in_features=in_features, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


def build_effvit_retinanet_fpn_backbone(cfg, input_shape: Optional[ShapeSpec], family: str) -> Backbone:
    """Backbone + FPN for RetinaNet: strides 8-128 (``p3``-``p7``), the two coarsest levels from stride-2 convs on
    the last backbone map (a family with the upsampling neck, maps at strides 16-64: stride 8 from a transposed
    conv, 128 from a conv on its stride-64 map)."""
    bottom_up = build_effvit_backbone(cfg, input_shape, family)
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    _check_in_features(bottom_up, in_features)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    if get_family(family).upsample_neck:
        return UpsampleFPNBackbone(bottom_up, in_features, out_channels, finest_stride=8, num_extra_convs=1,
                                   norm=cfg.MODEL.FPN.NORM)
    last = in_features[-1]
    top = LastLevelP6P7(bottom_up.output_shape()[last].channels, out_channels, in_feature=last)
    return FPN(bottom_up=bottom_up, in_features=in_features, out_channels=out_channels, norm=cfg.MODEL.FPN.NORM,
               top_block=top, fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


def _check_in_features(bottom_up: Backbone, in_features: List[str]) -> None:
    missing = [f for f in in_features if f not in bottom_up.output_shape()]
    if not in_features or missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES {in_features} must be maps returned by the backbone; it returns "
            f"{bottom_up.out_features} (MODEL.EFFVIT.OUT_FEATURES; empty = every map of stride >= 4).")
