"""One :class:`FamilySpec` per model family, declared next to its core (``SPEC = register_family(FamilySpec(...))``
at the end of ``effvit_plugins/models/<family>.py``).

Everything that would otherwise keep its own list of families iterates over :func:`families` instead: the
checkpoint converter (:mod:`effvit_plugins.convert`), the OpenMMLab adapters and their registration
(:mod:`effvit_plugins.mm`), the Detectron2 backbones (:mod:`effvit_plugins.detectron2`), the config generator
(``scripts/gen_configs.py``), ``tools/paper_tables.py`` and the tests' parametrisation.

The built-in families are the modules named in :data:`BUILTIN_FAMILY_MODULES` (the only list of them); a family
defined elsewhere (a user's project, a test) calls :func:`register_family` itself.

Framework-free: pure Python / torch.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Dict, List, Mapping, Optional, Tuple

# The modules that declare the built-in families, in the order tables list them.
BUILTIN_FAMILY_MODULES = (
    "effvit_plugins.models.efficientvit_mit",
    "effvit_plugins.models.efficientvit_msra",
    "effvit_plugins.models.edgevit",
    "effvit_plugins.models.efficientformer_v1",
    "effvit_plugins.models.efficientformer_v2",
)


@dataclasses.dataclass(frozen=True)
class Paper:
    """The primary source of a family: the paper and the official code."""

    authors: str  # "Pan et al."
    venue: str  # "ECCV 2022"
    arxiv: str  # "2205.03436"
    title: str
    code: str  # official repository, "owner/name"

    @property
    def citation(self) -> str:
        """``"Pan et al., ECCV 2022, arXiv 2205.03436"``."""
        return f"{self.authors}, {self.venue}, arXiv {self.arxiv}"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """An official training recipe of a dense-prediction task: the optimiser and schedule of an official config.

    The config generator (``scripts/gen_configs.py``) writes it into the family's configs of that task (and names
    ``source`` in their headers); configs of families without one use the generator's default recipe.
    """

    source: str  # the official config, "owner/name path" ("{v}": the variant)
    lr: float
    weight_decay: float
    variants: Tuple[str, ...] = ()  # the variants it was published for (empty: every variant)
    no_decay: Tuple[str, ...] = ()  # parameter-name fragments trained without weight decay
    warmup_iters: int = 0  # linear warm-up from ``warmup_factor`` x lr
    warmup_factor: float = 1.0
    min_lr: float = 0.0  # the final lr of a poly schedule
    results: str = ""  # what the official repository publishes with it (when the data file has no figure)

    def applies_to(self, variant: str) -> bool:
        return not self.variants or variant in self.variants

    def source_of(self, variant: str) -> str:
        return self.source.format(v=variant)


@dataclasses.dataclass(frozen=True)
class SegHead:
    """The family's own official segmentation head, with one setting per published (variant, dataset).

    Its mmseg configs are ``configs/<config_folder>/<config_name>.py`` on ``configs/_base_/models/<model_base>.py``
    (the backbone + head model) and ``configs/_base_/schedules/<schedule>.py``.
    """

    model_base: str
    config_name: str  # "{v}": the variant, "{dataset}": the dataset token ("ade20k-512x512")
    schedule: str
    settings: Mapping[Tuple[str, str], Mapping[str, object]]  # (variant, dataset) -> decode-head arguments
    source: str  # where the settings were published


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """Everything the project needs to know about a model family, in one place.

    Identity and naming:
        key: family key (``'edgevit'``): ``convert_checkpoint --family``, ``MODEL.EFFVIT.FAMILY``, the rows of
            ``effvit_plugins/data/published_results.json``, Detectron2 builder names ``build_<key>_*backbone``.
        title: human name (``'EdgeViT'``).
        name: class-name stem and registry name of the backbone (``'EdgeViT'``): OpenMMLab ``type='EdgeViT'``,
            head ``'EdgeViTClsHead'``, Detectron2 class ``D2EdgeViT``.
        config_folder: ``configs/<config_folder>/`` (two families may share one, as EfficientFormer V1/V2 do).
        config_prefix: OpenMMLab config-name stem (``'efficientvit-msra'`` -> ``retinanet_efficientvit-msra-m4_...``).

    Core:
        backbone: the framework-free backbone class (a ``BackboneBase``).
        cls_head: the framework-free ImageNet head (official final norm / head parameters), or None.
        classifier: the official ImageNet model (``.backbone`` + ``.head``), or None.
        arch_settings: the variant table (``ARCH_SETTINGS``).
        variants: the official variants configs and tables are made for (default: every table entry).
        feature_strides: stride of each feature map of the backbone (its ``feature_info``).
        upsample_neck: the backbone has no stride-4/8 maps (EfficientViT-MSRA: 16/32/64), so dense prediction
            uses the official upsampling FPN (``EfficientViTMSRAFPN`` / ``UpsampleFPNBackbone``) instead of an FPN.

    Checkpoints (see :mod:`effvit_plugins.convert`):
        convert: ``convert_official_checkpoint(state_dict) -> state_dict`` for every official file of the family.
        key_signature: key fragments all present in the family's official files; ``key_exclude``: fragments never
            present (tells apart a similar family).
        new_in_dense / unused_on_load: key fragments a dense-prediction backbone may lack in / not want from an
            ImageNet file, as in the official dense code.
        imagenet_weights: official ImageNet file name with ``{v}`` for the variant, or None (none released).
        weights_url: official direct-download URL of the ImageNet file with ``{v}`` for the variant, or None (no
            direct download: none released, or only behind a sharing page such as Google Drive). The metafiles
            list it as the classifiers' ``Weights`` (:meth:`weights_url_of`).
        weights_variants: the variants whose file ``weights_url`` serves (empty: every variant).

    Dense-prediction defaults (the official dense backbones' settings; used by the config generator):
        seg_resolution: ``{'det': R, 'seg': R}``: the ``seg_resolution`` argument of the official detection /
            segmentation backbones (empty: the family has no such argument).
        dense_drop_path: variant -> stochastic depth of the official dense backbones.
        dense_layer_scale: variant -> ``layer_scale_init_value`` of the official dense backbones.
        dense_norm_eval: BatchNorm statistics stay at their ImageNet values in detection / segmentation configs.
        det_variant: the one variant of the family used where one per family is enough (LVIS, Cityscapes FPN
            in Detectron2, benchmarks).
        official_recipes: task (``'retinanet'``, ``'mask-rcnn'``, ``'sem-fpn'``) -> the official :class:`Recipe`
            of that task, where one was published.
        seg_head: the family's own official segmentation head (:class:`SegHead`), or None (the family gets
            Semantic FPN configs instead).

    Classification (mmpretrain ImageNet configs):
        cls_backbone_kwargs: extra backbone arguments of the ImageNet model (e.g. MSRA's ``img_size=224``).
        cls_head_kwargs: variant -> extra arguments of the ImageNet head besides ``in_channels`` / ``num_classes``
            (e.g. MIT's ``widths``), or None.
        cls_drop_path: variant -> stochastic depth of the official ImageNet recipe.
        cls_batch: config-name batch token (``'8xb256'``).
        cls_crop_pct: evaluation ``crop_pct`` (a float, or a callable of the variant's settings).
        cls_distillation: the official classifier has a distillation head.

    Paper:
        paper: the primary source (:class:`Paper`).
        architecture: words naming the family's building blocks, the ``Architecture`` of its collection in
            ``configs/<config_folder>/metafile.yml`` (mmpretrain's metafile schema).
        plot_family: the legend entry in ``tools/paper_tables.py --plot`` (V1 and V2 share one).
    """

    key: str
    title: str
    name: str
    config_folder: str
    config_prefix: str
    backbone: type
    arch_settings: Mapping[str, dict]
    feature_strides: Tuple[int, ...]
    convert: Callable
    key_signature: Tuple[str, ...]
    paper: Paper
    cls_head: Optional[type] = None
    classifier: Optional[type] = None
    variants: Tuple[str, ...] = ()
    upsample_neck: bool = False
    key_exclude: Tuple[str, ...] = ()
    new_in_dense: Tuple[str, ...] = ()
    unused_on_load: Tuple[str, ...] = ()
    imagenet_weights: Optional[str] = None
    weights_url: Optional[str] = None
    weights_variants: Tuple[str, ...] = ()
    seg_resolution: Mapping[str, int] = dataclasses.field(default_factory=dict)
    dense_drop_path: Mapping[str, float] = dataclasses.field(default_factory=dict)
    dense_layer_scale: Mapping[str, float] = dataclasses.field(default_factory=dict)
    dense_norm_eval: bool = True
    det_variant: str = ""
    official_recipes: Mapping[str, Recipe] = dataclasses.field(default_factory=dict)
    seg_head: Optional[SegHead] = None
    cls_backbone_kwargs: Mapping[str, object] = dataclasses.field(default_factory=dict)
    cls_head_kwargs: Optional[Callable[[str], dict]] = None
    cls_drop_path: Mapping[str, float] = dataclasses.field(default_factory=dict)
    cls_batch: str = "8xb256"
    cls_crop_pct: object = 0.875
    cls_distillation: bool = False
    plot_family: str = ""
    architecture: Tuple[str, ...] = ()

    def __post_init__(self):
        if not self.variants:
            object.__setattr__(self, "variants", tuple(self.arch_settings))
        unknown = [v for v in self.variants if v not in self.arch_settings]
        if unknown:
            raise ValueError(f"FamilySpec {self.key!r}: variants {unknown} are not in arch_settings "
                             f"({', '.join(self.arch_settings)}).")
        unknown = sorted(set(self.weights_variants) - set(self.variants))
        if unknown:
            raise ValueError(f"FamilySpec {self.key!r}: weights_variants {unknown} are not in variants "
                             f"({', '.join(self.variants)}).")
        if not self.det_variant:
            object.__setattr__(self, "det_variant", self.variants[0])
        elif self.det_variant not in self.variants:
            raise ValueError(f"FamilySpec {self.key!r}: det_variant {self.det_variant!r} is not one of "
                             f"{', '.join(self.variants)}.")
        if not self.plot_family:
            object.__setattr__(self, "plot_family", self.title)
        for task, recipe in self.official_recipes.items():
            if not set(recipe.variants) <= set(self.variants):
                raise ValueError(f"FamilySpec {self.key!r}: official_recipes[{task!r}] names variants "
                                 f"{sorted(set(recipe.variants) - set(self.variants))} that are not in variants "
                                 f"({', '.join(self.variants)}).")
        if self.seg_head and not {v for v, _ in self.seg_head.settings} <= set(self.variants):
            raise ValueError(f"FamilySpec {self.key!r}: seg_head.settings names variants that are not in variants "
                             f"({', '.join(self.variants)}).")
        if list(self.feature_strides) != sorted(self.feature_strides):
            raise ValueError(f"FamilySpec {self.key!r}: feature_strides must increase, got {self.feature_strides}.")

    # -- derived names ------------------------------------------------------------------------------------------
    @property
    def head_name(self) -> str:
        """Registry name of the ImageNet head (``'EdgeViTClsHead'``)."""
        return f"{self.name}ClsHead"

    @property
    def d2_name(self) -> str:
        """Class name of the Detectron2 backbone (``'D2EdgeViT'``)."""
        return f"D2{self.name}"

    @property
    def d2_token(self) -> str:
        """Detectron2 config-name token (``'efficientvit_msra'``)."""
        return self.config_prefix.replace("-", "_")

    def crop_pct(self, variant: str) -> float:
        c = self.cls_crop_pct
        return float(c(self.arch_settings[variant]) if callable(c) else c)

    def weights_file(self, variant: str) -> Optional[str]:
        """The official ImageNet file name of ``variant`` (None: none released)."""
        return self.imagenet_weights.format(v=variant) if self.imagenet_weights else None

    def weights_url_of(self, variant: str) -> Optional[str]:
        """The official direct-download URL of ``variant``'s ImageNet file (None: no direct download)."""
        if not self.weights_url or (self.weights_variants and variant not in self.weights_variants):
            return None
        return self.weights_url.format(v=variant)

    def dense_indices(self, min_stride: int = 4) -> Tuple[int, ...]:
        """Indices of the feature maps a dense model reads: every map of stride >= ``min_stride`` (all maps for
        a family with the upsampling neck)."""
        if self.upsample_neck:
            return tuple(range(len(self.feature_strides)))
        return tuple(i for i, s in enumerate(self.feature_strides) if s >= min_stride)

    def dense_backbone_kwargs(self, variant: str, task: str = "det") -> Dict[str, object]:
        """Backbone arguments of the official dense backbone of ``variant`` for ``task`` (``'det'``/``'seg'``)."""
        kw: Dict[str, object] = {}
        if self.seg_resolution:
            kw["seg_resolution"] = self.seg_resolution[task]
        if self.dense_drop_path.get(variant):
            kw["drop_path_rate"] = self.dense_drop_path[variant]
        if variant in self.dense_layer_scale:  # (the official detection and segmentation backbones alike)
            kw["layer_scale_init_value"] = self.dense_layer_scale[variant]
        if self.dense_norm_eval:
            kw["norm_eval"] = True
        return kw


_SPECS: Dict[str, FamilySpec] = {}
_LOADED = False
_LISTENERS: List[Tuple[Callable[[FamilySpec], None], Optional[Callable[[FamilySpec], None]]]] = []


def on_register(callback: Callable[[FamilySpec], None],
                on_unregister: Optional[Callable[[FamilySpec], None]] = None) -> None:
    """Call ``callback(spec)`` for every family registered so far (built-in ones included) and for every family
    registered later; ``on_unregister(spec)`` when :func:`unregister_family` forgets one. The framework adapters use
    this to make (and remove) their classes for each family (OpenMMLab backbone and head adapters, Detectron2
    backbones), so a family declared anywhere gets them without further edits."""
    specs = families()  # built-in families load first, so each spec reaches the callback once
    _LISTENERS.append((callback, on_unregister))
    for spec in specs:
        callback(spec)


def register_family(spec: FamilySpec) -> FamilySpec:
    """Make ``spec`` known to every part of the project (returns it, for ``SPEC = register_family(...)``).

    Raises:
        ValueError: a different family already uses the key or the name.
    """
    for other in _SPECS.values():
        if other.key == spec.key or other.name == spec.name:
            if same_class(other.backbone, spec.backbone):
                return other  # the same module imported again (e.g. pytest's importlib mode): keep the first
            what = "key" if other.key == spec.key else "name"
            raise ValueError(f"Cannot register model family {spec.key!r} ({spec.backbone.__qualname__}): its "
                             f"{what} {getattr(spec, what)!r} is already used by family {other.key!r} "
                             f"({other.backbone.__module__}.{other.backbone.__qualname__}). Pick another {what}.")
    _SPECS[spec.key] = spec
    try:
        for callback, _ in list(_LISTENERS):
            callback(spec)
    except Exception:
        unregister_family(spec.key)  # nothing half-registered (e.g. a name another package already uses)
        raise
    return spec


def unregister_family(key: str) -> None:
    """Forget a family registered with :func:`register_family`, and the adapters' classes made for it (for tests
    defining a temporary family). Built-in families cannot be forgotten."""
    spec = _SPECS.get(key)
    if spec is None:
        return
    if spec.backbone.__module__ in BUILTIN_FAMILY_MODULES:
        raise ValueError(f"{key!r} is a built-in model family; it cannot be unregistered.")
    del _SPECS[key]
    for _, forget in reversed(_LISTENERS):
        if forget is not None:
            forget(spec)


def same_class(a, b) -> bool:
    """The same class, or the same definition imported twice (pytest's importlib mode imports modules again)."""
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _load_builtin() -> None:
    global _LOADED
    if not _LOADED:
        for mod in BUILTIN_FAMILY_MODULES:
            importlib.import_module(mod)
        _LOADED = True


def families() -> List[FamilySpec]:
    """Every registered family: the built-in ones first (in :data:`BUILTIN_FAMILY_MODULES` order), then others."""
    _load_builtin()
    order = {m: i for i, m in enumerate(BUILTIN_FAMILY_MODULES)}
    return sorted(_SPECS.values(), key=lambda s: order.get(s.backbone.__module__, len(order)))


def family_keys() -> List[str]:
    return [s.key for s in families()]


def get_family(key: str) -> FamilySpec:
    """The spec of family ``key``.

    Raises:
        ValueError: unknown key (the message lists the valid ones).
    """
    _load_builtin()
    if key not in _SPECS:
        raise ValueError(f"Unknown model family {key!r}; valid families: {', '.join(_SPECS)}.")
    return _SPECS[key]


def family_of(obj) -> FamilySpec:
    """The spec of a backbone class or instance (an adapter subclass of a core works too). Where one family's
    backbone subclasses another's, the most specific one (first in the class's MRO) is the answer.

    Raises:
        ValueError: the class is not a registered family's backbone.
    """
    cls = obj if isinstance(obj, type) else type(obj)
    by_backbone = {spec.backbone: spec for spec in families()}
    for base in cls.__mro__:
        if base in by_backbone:
            return by_backbone[base]
    raise ValueError(f"{cls.__qualname__} is not the backbone of a registered model family "
                     f"({', '.join(family_keys())}).")


def find_variant(spec: FamilySpec, variant: str) -> str:
    """The table key of ``variant`` (case-insensitive), or an error listing the valid ones."""
    table = {k.lower(): k for k in spec.arch_settings}
    if str(variant).lower() not in table:
        raise ValueError(f"Unknown {spec.title} variant {variant!r}. Valid variants: {', '.join(spec.arch_settings)}.")
    return table[str(variant).lower()]
