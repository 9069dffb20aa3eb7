"""Helpers for tests of effvit_plugins and of projects built on it (as ``mmdet.testing``).

* :func:`randomize_model` -- the one randomiser: every tensor random and well scaled, or (``weights=False``) only
  the tensors an untrained model holds at trivial values (BatchNorm statistics and affines, attention-bias tables).
* :func:`official_state_dict` -- an ImageNet classifier's tensors under the family's official checkpoint names,
  checked against the family's converter; :func:`official_dense_state_dict` -- a dense model in the layout of
  the official dense checkpoints of a family with ``seg_resolution`` tables.
* Builders: :func:`build_backbone` / :func:`build_classifier` (framework-free cores of a family, by spec key and
  variant), :func:`build_mm_backbone` (the OpenMMLab adapter through mmdet's registry), :func:`core_backbone`
  (the core behind an adapter config).
* Comparisons: :func:`timm_model_from` (timm's model with given tensors, strictly), :func:`max_logit_differences`,
  :func:`assert_complexity` (parameters / MACs against published figures).
* :func:`check_backbone_contract` and the ``check_*`` functions it runs: the backbone contract, for any registered
  family (``tests/models/test_backbone_contract.py`` runs them for every family); :func:`assert_one_graph`: a
  module compiles as one ``torch.compile`` graph (``tests/models/test_compile.py``).
* :func:`mim_search_names` -- the model names in the output of OpenMMLab's ``mim search``;
  :func:`detectron2_results` -- the metrics in the log of a Detectron2 evaluation (its ``copypaste:`` lines);
  :func:`detectron2_tools_dir` -- Detectron2's own ``tools/`` scripts.
* Weights from URLs: :func:`serve_directory` (a loopback HTTP server of a folder), :func:`save_hashed` (a file
  named with its SHA-256 prefix, torch.hub's convention) and :func:`save_official_classifier` (a random classifier
  saved so, in its family's official layout).

Framework-free: mmengine / mmdet (and timm) are imported only by the functions that use them.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import inspect
import math
import os
import pickle
import re
import threading
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from .models.spec import FamilySpec, family_of, get_family
from .utils.complexity import count_params

SpecLike = Union[str, FamilySpec]

# Variants with more parameters than this are checked on the meta device (shapes, freezing pattern) only: real
# arithmetic on them costs tens of seconds on 2 cores.
BIG_PARAMS = 60_000_000


def as_spec(family: SpecLike) -> FamilySpec:
    """The :class:`FamilySpec` of a family key (or the spec itself)."""
    return family if isinstance(family, FamilySpec) else get_family(family)


# ---------------------------------------------------------------------------------------------------------------
# Randomising
# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def randomize_model(model: nn.Module, seed: int = 0, weights: bool = True) -> nn.Module:
    """Make ``model``'s tensors random and well scaled, so that no branch is trivial (for value comparisons).
    Returns the model (a new one when it had to be materialised).

    A model built on the meta device is first materialised on the CPU (building the big variants there is instant,
    their real initialisers take seconds) and its derived index buffers are recomputed. Then, with ``weights``:
    weights ``N(0, 0.36/fan_in)`` (a little below variance-preserving, so that activations stay at a trained
    network's scale through 30+ residual blocks: with ``1/fan_in`` some of our families reach logits of 1e3-1e4,
    where float32 rounding is amplified by saturated softmaxes and no two implementations agree to 1e-4); norm
    scales ``U(0.6, 1.4)``; biases ``N(0, 0.1^2)``; layer scales ``U(0.05, 0.3)`` (their official init, 1e-5, would
    make the blocks identities). Always: attention-bias tables ``N(0, 1)``; BatchNorm running means ``N(0, 0.2^2)``,
    variances ``U(0.5, 2)``, scales ``U(0.6, 1.4)`` and shifts ``N(0, 0.1^2)`` (so that BN is not an identity in
    eval). Tensors of more than 2^18 elements take their normal samples from a pool of 2^20 + 7 at a random offset
    (drawing 250M samples one by one takes seconds).
    """
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        model = model.to_empty(device="cpu")
        for m in model.modules():
            if hasattr(m, "init_non_persistent_buffers"):
                m.init_non_persistent_buffers()
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(2 ** 20 + 7, generator=g)

    def normal(shape):
        n = math.prod(shape)
        if n <= 2 ** 18:
            return torch.randn(shape, generator=g)
        start = int(torch.randint(pool.numel(), (1,), generator=g))
        return pool.repeat(-(-(start + n) // pool.numel()))[start:start + n].view(shape)

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=g) * (hi - lo) + lo

    bn_params = {id(p) for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters(recurse=False)}
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("attention_biases"):
            p.copy_(normal(p.shape))
        elif not weights and id(p) not in bn_params:
            continue
        elif leaf.startswith("layer_scale") or leaf == "gamma":
            p.copy_(uniform(p.shape, 0.05, 0.3))
        elif p.dim() > 1:
            p.copy_(normal(p.shape) * (0.6 / p[0].numel() ** 0.5))
        elif leaf == "weight":
            p.copy_(uniform(p.shape, 0.6, 1.4))
        else:
            p.copy_(normal(p.shape) * 0.1)
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(normal(m.running_mean.shape) * 0.2)
            m.running_var.copy_(uniform(m.running_var.shape, 0.5, 2.0))
            m.num_batches_tracked.zero_()
    return model


# ---------------------------------------------------------------------------------------------------------------
# Official checkpoint layouts
# ---------------------------------------------------------------------------------------------------------------
def official_state_dict(classifier: nn.Module) -> Dict[str, torch.Tensor]:
    """An ImageNet classifier's tensors under its family's official checkpoint names, as an official release file
    holds them.

    The names are ours with the prefixes of the classifier class's ``official_key_prefixes`` (``(ours, theirs)``
    pairs, first match wins) replaced; the derived index buffers (``attention_bias_idxs``), which official files
    store and some of our models keep non-persistent, are included. Checked here: the family's converter
    (``spec.convert``) maps the result back onto exactly our state dict (so the renaming is its inverse and
    nothing else).
    """
    spec = family_of(classifier.backbone)
    prefixes = tuple(getattr(type(classifier), "official_key_prefixes", ()))

    def official_name(k):
        for ours, theirs in prefixes:
            if k.startswith(ours):
                return theirs + k[len(ours):]
        return k

    ours = classifier.state_dict()
    out = {}
    for prefix, m in classifier.named_modules():  # module order, each derived buffer next to its table
        for n, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is not None:
                k = f"{prefix}.{n}" if prefix else n
                out[official_name(k)] = ours.get(k, t)
    back = spec.convert(dict(out))
    assert back.keys() == ours.keys(), sorted(set(back) ^ set(ours))[:8]
    assert all(v.shape == back[k].shape and (v.is_meta or torch.equal(v, back[k])) for k, v in ours.items())
    return out


def official_dense_state_dict(model: nn.Module, backbone_cfg: dict, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Our dense model (mmseg segmentor / mmdet detector state dict, backbone with ``seg_resolution`` tables) in the
    layout of the family's official dense checkpoints (EfficientFormer: the official ``segmentation/`` and
    ``detection/`` backbones, github.com/snap-research/EfficientFormer): every dense attention also stores the
    ImageNet table ``attention_biases`` (unused; sized for 224, random here) and the index buffers
    ``attention_bias_idxs`` / ``attention_bias_idxs_seg`` (random indices: converters must drop them); neck and
    head names are the upstream ones (mmseg 0.x = 1.x, mmdet 2.x = 3.x)."""
    imagenet = core_backbone({**backbone_cfg, "seg_resolution": None}).state_dict()  # tables for 224
    official = {}
    g = torch.Generator().manual_seed(seed)
    for k, v in model.state_dict().items():
        official[k] = v
        if k.endswith(".attention_biases_seg"):
            name = k[len("backbone."):-len("_seg")]
            table = imagenet[name]

            def queries(n):  # the stride-2 (downsampling) attention queries a half-resolution grid
                return n if ".attn." not in k else ((math.isqrt(n) + 1) // 2) ** 2

            official[k[:-len("_seg")]] = torch.randn(table.shape, generator=g)
            for suffix, n in (("attention_bias_idxs", table.shape[1]), ("attention_bias_idxs_seg", v.shape[1])):
                official[k.rsplit(".", 1)[0] + "." + suffix] = torch.randint(0, n, (queries(n), n), generator=g)
    return official


# ---------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------
def build_backbone(family: SpecLike, variant: Optional[str] = None, device=None, **kwargs) -> nn.Module:
    """The framework-free backbone of ``family`` (default variant: the smallest, ``spec.variants[0]``), built
    under ``torch.device(device)`` when given (``'meta'``: instant, no initialisation)."""
    spec = as_spec(family)
    arch = spec.variants[0] if variant is None else variant
    if device is None:
        return spec.backbone(arch, **kwargs)
    with torch.device(device):
        return spec.backbone(arch, **kwargs)


def build_classifier(family: SpecLike, variant: Optional[str] = None, device=None, **kwargs) -> nn.Module:
    """The official ImageNet classifier of ``family`` (``spec.classifier``; default: the smallest variant)."""
    spec = as_spec(family)
    if spec.classifier is None:
        raise ValueError(f"{spec.title} has no ImageNet classifier (spec.classifier is None).")
    arch = spec.variants[0] if variant is None else variant
    if device is None:
        return spec.classifier(arch, **kwargs)
    with torch.device(device):
        return spec.classifier(arch, **kwargs)


def build_mm_backbone(family: SpecLike, variant: Optional[str] = None, device=None, scope: str = "mmdet",
                      **kwargs) -> nn.Module:
    """The OpenMMLab adapter of ``family`` built the way a user's config builds it: through ``scope``'s registry
    (``type=spec.name``). Imports mmengine / the OpenMMLab library and registers our modules."""
    import importlib

    from mmengine.registry import DefaultScope

    import effvit_plugins  # noqa: F401  (registration)

    spec = as_spec(family)
    models = importlib.import_module(f"{scope}.registry").MODELS
    cfg = dict(type=spec.name, arch=variant, **kwargs)
    with DefaultScope.overwrite_default_scope(scope):
        if device is None:
            return models.build(cfg)
        with torch.device(device):
            return models.build(cfg)


def core_backbone(backbone_cfg: dict) -> nn.Module:
    """The framework-free core of a registered OpenMMLab backbone (``spec.backbone`` of its family), built with the
    config's arguments."""
    from .registry import MODELS

    spec = family_of(MODELS.get(backbone_cfg["type"]))
    return spec.backbone(**{k: v for k, v in backbone_cfg.items() if k not in ("type", "init_cfg")})


# ---------------------------------------------------------------------------------------------------------------
# Comparisons with timm and published figures (timm is imported when used)
# ---------------------------------------------------------------------------------------------------------------
def timm_model_from(name: str, state_dict: Dict[str, torch.Tensor], **kwargs) -> nn.Module:
    """timm's ``name`` with ``state_dict`` loaded **strictly**, in eval mode. Built on the meta device and given the
    tensors of ``state_dict`` themselves (no initialisation, no copy); its non-persistent index buffers are then
    allocated and computed by timm (``init_non_persistent_buffers``)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    result = model.load_state_dict(state_dict, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    for m in model.modules():
        meta = {n: b for n, b in m._buffers.items() if b is not None and b.is_meta}
        for n, b in meta.items():
            m._buffers[n] = torch.empty_like(b, device="cpu")
        if meta:
            m.init_non_persistent_buffers()
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    return model.eval()


def max_logit_differences(ours: nn.Module, ref: nn.Module, x: torch.Tensor, atol: float = 1e-4,
                          inference_path: bool = True) -> Dict[str, float]:
    """max |ours - ref| of the eval logits, asserted below ``atol``, with ours on the ``'training_graph'``
    (autograd enabled: plain conv -> BN) and, with ``inference_path``, on the ``'inference'`` path (no autograd:
    BN folded, inference caches, channels-last; folding the big variants' weights takes seconds)."""
    ours.eval()
    ref.eval()
    with torch.no_grad():
        expected = ref(x)
    diffs = {}
    for path in ("inference", "training_graph") if inference_path else ("training_graph",):
        with torch.set_grad_enabled(path == "training_graph"):
            diffs[path] = (ours(x).detach() - expected).abs().max().item()
    assert expected.abs().max() > 0.1, "trivial logits: the comparison would prove nothing"
    print(f"max |ours - {type(ref).__name__}| = {diffs} (logits up to {expected.abs().max().item():.3g})")
    assert all(d < atol for d in diffs.values()), diffs
    return diffs


def figure(text: str) -> Tuple[float, float]:
    """A published or measured figure as written (``'3.5M'``, ``'0.100G'``) -> (value, half-width of its rounding):
    ``'3.5M'`` is 3.5e6 +- 0.05e6, ``'24M'`` 24e6 +- 0.5e6."""
    m = re.fullmatch(r"(\d+)(?:\.(\d+))?([KMG])", text)
    assert m, f"not a figure: {text!r}"
    unit = {"K": 1e3, "M": 1e6, "G": 1e9}[m[3]]
    decimals = len(m[2] or "")
    return float(f"{m[1]}.{m[2] or 0}") * unit, 0.5 * 10.0 ** -decimals * unit


def assert_complexity(model: nn.Module, params: str, macs: str, timm_name: Optional[str] = None,
                      published_count: Optional[Callable[[nn.Module], int]] = None) -> None:
    """``model`` (an ImageNet classifier, built on the meta device): its parameter count equals timm's own count for
    ``timm_name`` exactly; ``published_count(model)`` is within the rounding of ``params`` and its MACs at 224x224
    within the rounding of ``macs`` (see :func:`figure`)."""
    import timm

    from .utils.complexity import count_macs

    n = count_params(model)
    if timm_name is not None:
        with torch.device("meta"):
            assert n == count_params(timm.create_model(timm_name)), "parameter count differs from timm's"
    value, half_width = figure(params)
    published_count = published_count or count_params
    assert abs(published_count(model) - value) <= half_width, (published_count(model), params)
    value, half_width = figure(macs)
    n_macs = count_macs(model, (1, 3, 224, 224))
    assert abs(n_macs - value) <= half_width, (n_macs, macs)


def build_on_meta(cls, *args, **kwargs) -> nn.Module:
    """``cls(*args, **kwargs)`` built on the meta device (instant; for shapes, counts and :func:`randomize_model`)."""
    with torch.device("meta"):
        return cls(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# The backbone contract
# ---------------------------------------------------------------------------------------------------------------
def accepts(spec: FamilySpec, argument: str) -> bool:
    """Whether the family's backbone takes ``argument`` (read from its signature)."""
    return argument in inspect.signature(spec.backbone).parameters


def is_big(spec: FamilySpec, variant: str) -> bool:
    """More than :data:`BIG_PARAMS` parameters (checked on the meta device only)."""
    return sum(p.numel() for p in build_backbone(spec, variant, device="meta").parameters()) > BIG_PARAMS


def expected_shapes(m, n, h, w):
    return [(n, c, math.ceil(h / s), math.ceil(w / s)) for c, s in zip(m.out_channels, m.out_strides)]


def all_maps(spec: FamilySpec, variant: str) -> tuple:
    return tuple(range(len(build_backbone(spec, variant, device="meta").feature_info)))


def check_feature_info_and_odd_size(spec: FamilySpec, variant: str) -> None:
    """``feature_info`` agrees with the stage metadata and ``spec.feature_strides``, names real modules, strides
    double; a real forward at 97x131 gives maps of the announced shapes (big variants: on the meta device)."""
    m = build_backbone(spec, variant, device="meta", out_indices=all_maps(spec, variant))
    big = is_big(spec, variant)
    if not big:
        m = randomize_model(m)
    m.eval()
    info = m.feature_info
    assert [f["index"] for f in info] == list(range(m.num_stages))
    assert m.stage_channels == [f["num_chs"] for f in info] and m.stage_strides == [f["reduction"] for f in info]
    assert tuple(m.stage_strides) == tuple(spec.feature_strides), (m.stage_strides, spec.feature_strides)
    assert all(b == 2 * a for a, b in zip(m.stage_strides, m.stage_strides[1:]))
    for f in info:  # the named module exists
        m.get_submodule(f["module"])
    x = torch.randn(1, 3, 97, 131, device=next(m.parameters()).device)
    with torch.no_grad():
        outs = m(x)
    assert [tuple(o.shape) for o in outs] == expected_shapes(m, 1, 97, 131)
    if not big:
        assert all(o.is_contiguous() and torch.isfinite(o).all() for o in outs)
        assert len({round(o.std().item(), 6) for o in outs}) == len(outs)  # real, distinct maps


def check_large_odd_size(spec: FamilySpec, variant: str, size=(801, 1203)) -> None:
    """Odd maps at every stride (several official implementations fail at such sizes)."""
    m = randomize_model(build_backbone(spec, variant)).eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, *size))
    assert [tuple(o.shape) for o in outs] == expected_shapes(m, 1, *size)
    assert all(torch.isfinite(o).all() for o in outs)


def check_empty_batch(spec: FamilySpec, variant: str, training: bool) -> None:
    """mmdet can feed a batch of 0 images: empty maps of the right shape, no error (the smallest variant for real,
    the others on the meta device)."""
    m = build_backbone(spec, variant, device=None if variant == spec.variants[0] else "meta")
    m.train(training)
    x = torch.empty(0, 3, 97, 131, device=next(m.parameters()).device)
    outs = m(x)
    assert [tuple(o.shape) for o in outs] == expected_shapes(m, 0, 97, 131)
    inter = m.forward_intermediates(x, intermediates_only=True)
    assert [tuple(o.shape[1:]) for o in inter] == [
        (c, math.ceil(97 / s), math.ceil(131 / s)) for c, s in zip(m.stage_channels, m.stage_strides)]


def check_out_indices(spec: FamilySpec, variant: str) -> None:
    """Any subset in any order selects those maps (same values), negative indices count from the end, bad
    indices are errors."""
    import pytest

    m = randomize_model(build_backbone(spec, variant, out_indices=all_maps(spec, variant))).eval()
    n = m.num_stages
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        full = m(x)
    sel = (n - 1, 0)  # any order, any subset
    m2 = build_backbone(spec, variant, out_indices=sel)
    res = m2.load_state_dict(m.state_dict(), strict=False)  # (output norms of unused maps are not built)
    assert not res.missing_keys
    assert all(k.split(".")[0] not in dict(m2.named_children()) for k in res.unexpected_keys), res.unexpected_keys
    m2.eval()
    with torch.no_grad():
        part = m2(x)
    assert m2.out_channels == [m.stage_channels[i] for i in sel]
    assert m2.out_strides == [m.stage_strides[i] for i in sel]
    for o, i in zip(part, sel):
        torch.testing.assert_close(o, full[i], rtol=1e-4, atol=1e-4)
    assert build_backbone(spec, variant, device="meta", out_indices=(-1,)).out_indices == (n - 1,)
    for bad, msg in (((n,), "out of range"), ((0, 0), "twice"), ((), "empty")):
        with pytest.raises(ValueError, match=msg):
            build_backbone(spec, variant, device="meta", out_indices=bad)


def _frozen_tensors(m) -> set:
    registered = {id(x) for x in m.modules()}
    frozen_mods = [sub for mod in m.stem_modules() + m.stage_modules()[:1] for sub in mod.modules()
                   if id(sub) in registered]
    return frozen_mods, {id(t) for sub in frozen_mods for t in list(sub.parameters()) + list(sub.buffers())}


def check_frozen_stages_through_adapter(spec: FamilySpec, variant: str, tmp_path) -> None:
    """frozen_stages=1 freezes the stem and the FIRST stage only (mmdet/mmpretrain meaning). After init_weights
    (for the smallest variant: loading a checkpoint file from ``tmp_path``) and an optimizer step with momentum and
    weight decay, every frozen parameter and BN statistic is bit-identical and everything else has moved."""
    big = is_big(spec, variant)
    if big:
        m = build_mm_backbone(spec, variant, device="meta", frozen_stages=1)
    elif variant == spec.variants[0]:
        torch.manual_seed(0)
        ckpt = tmp_path / "backbone.pth"
        torch.save(build_backbone(spec, variant).state_dict(), ckpt)
        m = build_mm_backbone(spec, variant, frozen_stages=1, init_cfg=dict(type="Pretrained", checkpoint=str(ckpt)))
    else:
        m = randomize_model(build_mm_backbone(spec, variant, device="meta", frozen_stages=1))
    if not big:  # (mmengine's init bookkeeping reads tensor values: not on the meta device)
        m.init_weights()
    m.train()
    registered = {id(x) for x in m.modules()}
    frozen_mods, frozen = _frozen_tensors(m)
    assert frozen, "the stem + first stage own no parameters?"
    for name, p in m.named_parameters():
        assert p.requires_grad == (id(p) not in frozen), name
    assert not any(sub.training for sub in frozen_mods)
    assert all(sub.training for mod in m.stage_modules()[1:] for sub in mod.modules()
               if id(sub) in registered and not any(id(p) in frozen for p in sub.parameters()))
    if big:
        return
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        opt.zero_grad()
        sum(o.square().mean() for o in m(torch.randn(2, 3, 32, 32))).backward()
        opt.step()
    frozen_names = {n for n, t in list(m.named_parameters()) + list(m.named_buffers()) if id(t) in frozen}
    after = m.state_dict()
    for k in before:
        if k in frozen_names:
            assert torch.equal(before[k], after[k]), f"frozen {k} changed"
    moved = [k for k in before
             if k not in frozen_names and k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert moved, "nothing outside the frozen stages was trained"


def check_frozen_stages_range(spec: FamilySpec, variant: str) -> None:
    import pytest

    m = build_backbone(spec, variant, device="meta")
    k = len(m.stage_modules())
    m0 = build_backbone(spec, variant, device="meta", frozen_stages=0)
    assert m0.frozen_modules() == m0.stem_modules() and m0.stem_modules()
    full = build_backbone(spec, variant, device="meta", frozen_stages=k)
    assert all(not p.requires_grad for p in full.parameters())
    assert all(p.requires_grad for p in build_backbone(spec, variant, device="meta", frozen_stages=-1).parameters())
    with pytest.raises(ValueError, match=r"frozen_stages must be an int in \[-1, %d\]" % k):
        build_backbone(spec, variant, device="meta", frozen_stages=k + 1)


def check_norm_eval(spec: FamilySpec, variant: str) -> None:
    """norm_eval keeps every BatchNorm in eval mode (statistics fixed) in a training backbone (a family without
    BatchNorm passes trivially only if it has none)."""
    m = build_backbone(spec, variant, norm_eval=True).train()
    bns = [x for x in m.modules() if isinstance(x, _BatchNorm)]
    assert all(not b.training for b in bns) and m.training
    before = [b.running_mean.clone() for b in bns]
    sum(o.mean() for o in m(torch.randn(2, 3, 64, 64))).backward()
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before, bns))
    if bns:
        m2 = build_backbone(spec, variant, norm_eval=False).train()
        m2(torch.randn(2, 3, 64, 64))
        assert any(not torch.equal(torch.zeros_like(b.running_mean), b.running_mean)
                   for b in m2.modules() if isinstance(b, _BatchNorm))


def check_drop_path(spec: FamilySpec, variant: str) -> None:
    """With ``drop_path_rate`` (when the backbone takes it): two training forwards differ, eval is deterministic,
    rate 0 is deterministic in training. A backbone without the argument rejects it."""
    import pytest

    if not accepts(spec, "drop_path_rate"):
        with pytest.raises(TypeError):
            build_backbone(spec, variant, drop_path_rate=0.1)
        return
    torch.manual_seed(0)
    m = build_backbone(spec, variant, drop_path_rate=0.3, norm_eval=True).train()  # BN fixed: only drop_path random
    x = torch.randn(4, 3, 64, 64)
    a, b = m(x)[-1], m(x)[-1]
    assert not torch.allclose(a, b), "two training-mode forwards with drop_path_rate > 0 must differ"
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x)[-1], m(x)[-1])
    plain = build_backbone(spec, variant, drop_path_rate=0.0, norm_eval=True).train()
    torch.testing.assert_close(plain(x)[-1], plain(x)[-1], rtol=0, atol=0)


def check_input_channels(spec: FamilySpec, variant: str) -> None:
    import pytest

    m = build_backbone(spec, variant, in_channels=4).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 4, 64, 64))[0].shape[0] == 1
    with pytest.raises(ValueError, match=r"expects an input of shape \(N, 4, H, W\).*in_channels=3"):
        m(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expects an input of shape"):
        m(torch.randn(3, 64, 64))


def check_arch_errors(spec: FamilySpec) -> None:
    """``arch`` is required; an unknown name lists the valid ones; a dict of the table's keys builds the same
    model and a missing / misspelt key is named."""
    import pytest

    names = list(spec.arch_settings)
    with pytest.raises(ValueError, match="`arch` is required"):
        spec.backbone()
    with pytest.raises(ValueError) as err:
        spec.backbone("nope")
    assert all(n in str(err.value) for n in names)
    settings = dict(spec.arch_settings[spec.variants[0]])
    with torch.device("meta"):
        named, custom = spec.backbone(spec.variants[0]), spec.backbone(dict(settings))
    assert [p.shape for p in named.parameters()] == [p.shape for p in custom.parameters()]
    key = sorted(settings)[0]
    with pytest.raises(ValueError, match=rf"missing \['{key}'\]"):
        spec.backbone({k: v for k, v in settings.items() if k != key})
    with pytest.raises(ValueError, match=r"unknown \['widht'\]"):
        spec.backbone(dict(settings, widht=3))


def check_pickle_and_forward_intermediates(spec: FamilySpec, variant: str) -> None:
    """The OpenMMLab adapter pickles with its inference caches filled; ``forward_intermediates`` returns the
    forward's maps."""
    m = randomize_model(build_mm_backbone(spec, variant), weights=False).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = m(x)
        m(x)  # populate inference caches (folded BN, biases): they must not break pickling
    clone = pickle.loads(pickle.dumps(m))
    assert type(clone) is type(m) and type(m).__module__ == "effvit_plugins.mm.backbones"
    with torch.no_grad():
        for a, b in zip(ref, clone(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        inter = m.forward_intermediates(x, indices=m.out_indices, intermediates_only=True)
        final, maps = m.forward_intermediates(x)
        last = m.forward_intermediates(x, indices=1, intermediates_only=True)
    for a, b in zip(ref, inter):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(maps) == m.num_stages and final.shape[1] == m.stage_channels[-1]
    assert len(last) == 1 and last[0].shape == maps[-1].shape


@contextlib.contextmanager
def count_recomputation(m: nn.Module):
    """Count the forward calls of the last checkpointing unit of backbone ``m`` (``feature_steps()[-1][-1]``) in
    the block: yields a list that gets one entry per call -- one per forward, and one more in the backward pass
    when the unit is checkpointed (pre-forward hooks: the recomputation may stop early, at the last saved tensor it
    needs)."""
    calls: List[int] = []
    handle = m.feature_steps()[-1][-1].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def check_grad_checkpointing(spec: FamilySpec, variant: str) -> None:
    """Gradient checkpointing -- switched on by the constructor's ``with_cp=True`` (OpenMMLab's name) and by
    ``set_grad_checkpointing(True)`` (timm's), the same switch -- recomputes the blocks in the backward pass and
    changes neither outputs nor gradients."""
    if not accepts(spec, "with_cp"):
        raise AssertionError(
            f"{spec.title}: the backbone's constructor has no `with_cp` argument. Add `with_cp: bool = False` to "
            f"{spec.backbone.__name__}.__init__ and pass it to init_contract(..., with_cp) "
            f"(docs/CONTRIBUTING_MODELS.md).")
    torch.manual_seed(0)
    plain = randomize_model(build_backbone(spec, variant, norm_eval=True), weights=False).train()
    cp = build_backbone(spec, variant, norm_eval=True, with_cp=True).train()
    cp.load_state_dict(plain.state_dict())
    assert not plain.grad_checkpointing and not plain.with_cp
    assert cp.grad_checkpointing and cp.with_cp, "with_cp=True must switch gradient checkpointing on"
    x = torch.randn(2, 3, 64, 64)

    def run(m):
        m.zero_grad()
        with count_recomputation(m) as calls:
            outs = m(x)
            sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        return [o.detach() for o in outs], grads, len(calls)

    o1, g1, n1 = run(plain)
    assert n1 == 1
    plain.set_grad_checkpointing(True)  # timm's switch, on the same model
    assert plain.with_cp
    for o2, g2, n2 in (run(cp), run(plain)):
        assert n2 == 2  # recomputed in the backward pass
        for a, b in zip(o1, o2):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert g1.keys() == g2.keys() and len(g1) > 10
        for k in g1:
            torch.testing.assert_close(g1[k], g2[k], rtol=1e-4, atol=1e-5, msg=k)


def assert_one_graph(module: nn.Module, *inputs, training: bool, name: str = "", rtol: float = 1e-4,
                     atol: float = 1e-4) -> None:
    """``torch.compile(module, fullgraph=True)`` in training mode (with autograd) or in eval mode (under
    ``torch.no_grad``: the eager CPU inference paths) captures ONE graph for ``inputs`` -- no graph break, no
    recompilation when called twice with the same inputs -- and computes what the eager module computes (within
    ``rtol``/``atol``: under compilation BatchNorm is not folded). The backend only counts the graphs and runs them
    as captured (no code generation). Resets dynamo before and after."""
    import torch._dynamo as dynamo

    name = name or type(module).__name__
    graphs: List[object] = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    dynamo.reset()
    module.train(training)
    compiled = torch.compile(module, backend=counting_backend, fullgraph=True, dynamic=False)
    try:
        with torch.set_grad_enabled(training):
            ref = module(*inputs)
            try:
                outs = [compiled(*inputs) for _ in range(2)]
            except dynamo.exc.Unsupported as e:
                raise AssertionError(
                    f"{name} ({'train' if training else 'eval, no_grad'}): torch.compile breaks the graph: {e}\n"
                    f"A CPU fast path that dynamo cannot trace must step aside while compiling (test "
                    f"effvit_plugins.models.layers.cache_disabled(), i.e. torch.compiler.is_compiling()).") from e
    finally:
        dynamo.reset()
    assert len(graphs) == 1, (
        f"{name} ({'train' if training else 'eval'}): {len(graphs)} graphs were compiled for two calls with the same "
        f"input (recompilation; run with TORCH_LOGS=recompiles to see which guard failed).")
    for out in outs:
        torch.testing.assert_close(out, ref, rtol=rtol, atol=atol, msg=lambda m: f"{name}: compiled != eager: {m}")


# the checks of one (family, variant) that need only the core (no OpenMMLab), cheapest first
CORE_CHECKS: Sequence[Callable[[FamilySpec, str], None]] = (
    check_feature_info_and_odd_size, check_out_indices, check_frozen_stages_range, check_norm_eval,
    check_drop_path, check_input_channels, check_grad_checkpointing,
)


def check_backbone_contract(family: SpecLike, variant: Optional[str] = None, tmp_path=None,
                            with_adapter: bool = True) -> None:
    """Every contract check for one variant (default: the smallest) of a registered family: the core checks
    (:data:`CORE_CHECKS`), empty batches, the ``arch`` errors and, with ``with_adapter``, the OpenMMLab adapter's
    frozen stages (needs ``tmp_path``, a ``pathlib.Path``) and pickling. Raises AssertionError on the first
    failure."""
    spec = as_spec(family)
    variant = spec.variants[0] if variant is None else variant
    for check in CORE_CHECKS:
        check(spec, variant)
    for training in (False, True):
        check_empty_batch(spec, variant, training)
    check_arch_errors(spec)
    if with_adapter:
        if tmp_path is None:
            raise ValueError("check_backbone_contract(with_adapter=True) needs tmp_path for the checkpoint file.")
        check_frozen_stages_through_adapter(spec, variant, tmp_path)
        check_pickle_and_forward_intermediates(spec, variant)


# ---------------------------------------------------------------------------------------------------------------
# OpenMMLab's mim and mmengine's process-wide visualizers
# ---------------------------------------------------------------------------------------------------------------
def mim_search_names(output: str) -> list:
    """The model names ``mim search PACKAGE`` printed (openmim 0.3.9: a ``config id: NAME`` line per model)."""
    return [line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("config id:")]


@contextlib.contextmanager
def fresh_visualizers() -> Iterator[None]:
    """Inside the block, mmengine's visualizers start as in a new process; afterwards the old ones are back.

    mmengine keeps every visualizer created in the process, per class (``ManagerMixin``): a runner that asks for a
    name already taken gets the old instance without it becoming the current one, and the visualization hooks draw
    with the latest one created (``Visualizer.get_current_instance``), e.g. an mmseg visualizer left by an earlier
    inferencer under mmdet's hook. Tools run in the test process (``main(argv)``) and inferencers go through this."""
    from mmengine.visualization import Visualizer

    def classes():
        found, todo = [], [Visualizer]
        while todo:
            cls = todo.pop()
            found.append(cls)
            todo.extend(cls.__subclasses__())
        return found

    before = {cls: dict(cls._instance_dict) for cls in classes()}
    for cls in before:
        cls._instance_dict.clear()
    try:
        yield
    finally:
        for cls in classes():
            cls._instance_dict.clear()
            cls._instance_dict.update(before.get(cls, {}))


# ---------------------------------------------------------------------------------------------------------------
# Weights from URLs
# ---------------------------------------------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002  (no access log on stderr)
        pass


@contextlib.contextmanager
def serve_directory(path: str) -> Iterator[str]:
    """Serve the folder ``path`` over HTTP on 127.0.0.1 (a free port, a background thread) while the block runs;
    yields the base URL (``http://127.0.0.1:PORT/``). Missing files answer 404."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=os.fspath(path)))
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def save_hashed(obj, directory: str, stem: str, ext: str = ".pth", digits: int = 8) -> str:
    """``torch.save(obj)`` to ``directory/<stem>-<first digits of its SHA-256>.<ext>`` (torch.hub's naming);
    returns the file name."""
    from .checkpoint import sha256_of

    tmp = os.path.join(directory, f"{stem}.unnamed")
    torch.save(obj, tmp)
    name = f"{stem}-{sha256_of(tmp)[:digits]}{ext}"
    os.replace(tmp, os.path.join(directory, name))
    return name


def save_official_classifier(directory: str, family: SpecLike, variant: Optional[str] = None, seed: int = 0
                             ) -> Tuple[str, nn.Module]:
    """A random ImageNet classifier of ``family`` (default: the smallest variant) saved as its official release
    file would hold it (:func:`official_state_dict` under ``'model'``), named ``<stem>-<sha256 prefix>.pth`` in
    ``directory``. Returns ``(file name, classifier)``."""
    spec = as_spec(family)
    classifier = randomize_model(build_classifier(spec, variant), seed)
    stem = f"{spec.key}_{variant or spec.variants[0]}"
    return save_hashed({"model": official_state_dict(classifier)}, directory, stem), classifier


def detectron2_tools_dir() -> str:
    """Detectron2's ``tools/`` folder (its own scripts: ``plain_train_net.py``, ``lazyconfig_train_net.py``,
    ``deploy/export_model.py``, ...) of the Detectron2 source we build, extracted once from the pinned archive.

    The archive is the one ``scripts/setup.sh`` builds Detectron2 from: ``$EFFVIT_THIRD_PARTY`` (default
    ``../shared/third_party`` next to the checkout)/``detectron2-02b5c4e.tar.gz``; ``$DETECTRON2_TOOLS`` names a
    ``tools/`` folder to use instead. The copy lives in ``$EFFVIT_CACHE`` (default ``~/.cache/effvit_plugins``).
    """
    import tarfile

    explicit = os.environ.get("DETECTRON2_TOOLS")
    if explicit:
        if not os.path.isfile(os.path.join(explicit, "plain_train_net.py")):
            raise FileNotFoundError(f"DETECTRON2_TOOLS={explicit!r} is not Detectron2's tools/ folder "
                                    "(no plain_train_net.py in it).")
        return explicit
    from .resources import source_root

    third_party = os.environ.get("EFFVIT_THIRD_PARTY") or os.path.join(source_root() or os.getcwd(), "..", "shared",
                                                                               "third_party")
    archive = os.path.join(third_party, "detectron2-02b5c4e.tar.gz")
    cache = os.environ.get("EFFVIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "effvit_plugins")
    target = os.path.join(cache, "detectron2-02b5c4e-tools")
    tools = os.path.join(target, "detectron2", "tools")
    if os.path.isfile(os.path.join(tools, "deploy", "export_model.py")):
        return tools
    if not os.path.isfile(archive):
        raise FileNotFoundError(f"Detectron2's tool scripts are needed and were looked for in {archive} (the archive "
                                "scripts/setup.sh builds Detectron2 from). Set EFFVIT_THIRD_PARTY to the folder "
                                "holding detectron2-02b5c4e.tar.gz, or DETECTRON2_TOOLS to a Detectron2 tools/ folder.")
    tmp = target + f".tmp{os.getpid()}"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("detectron2/tools/") and m.isfile()]
        tar.extractall(tmp, members=members, filter="data")
    os.makedirs(cache, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process extracted it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return tools


def detectron2_sample_input(cfg, image_path: str) -> torch.Tensor:
    """The (3, H, W) float tensor ``tools/deploy/export_model.py --sample-image image_path`` feeds the model (the
    image read in ``cfg.INPUT.FORMAT`` and resized as ``DefaultPredictor`` does)."""
    import detectron2.data.transforms as T
    from detectron2.data import detection_utils

    image = detection_utils.read_image(image_path, format=cfg.INPUT.FORMAT)
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
    return torch.as_tensor(aug.get_transform(image).apply_image(image).astype("float32").transpose(2, 0, 1))


def detectron2_detector_with_detections(cfg, image: torch.Tensor, seed: int = 0, logit_std: float = 2.0,
                                        background_logit: float = -10.0) -> nn.Module:
    """A Detectron2 detector of ``cfg`` (eval mode) with random, deterministic weights (:func:`randomize_model`)
    whose classifier is set so that it detects things on ``image`` with well separated scores: a GeneralizedRCNN's
    box classifier has its weights scaled so that its class logits on the image's proposals have a standard
    deviation of ``logit_std``, and its background logit is ``background_logit`` (each box then has a few classes
    above a threshold of a few percent); a RetinaNet's class logits get that standard deviation over all anchors
    and a bias of ``-4 * logit_std`` (its best-scored anchors come out near 0.5, where the sigmoid separates
    them best)."""
    from detectron2.modeling import GeneralizedRCNN, RetinaNet, build_model

    model = randomize_model(build_model(cfg), seed=seed).eval()
    if isinstance(model, GeneralizedRCNN):
        cls = model.roi_heads.box_predictor.cls_score
        seen = []
        hook = cls.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        with torch.no_grad():
            model.inference([{"image": image}], do_postprocess=False)
            hook.remove()
            logits = seen[0].flatten(1) @ cls.weight[:-1].t()
            cls.weight.mul_(logit_std / float(logits.std().clamp_min(1e-12)))
            cls.bias.zero_()
            cls.bias[-1] = background_logit
    elif isinstance(model, RetinaNet):
        cls = model.head.cls_score
        seen = []
        hook = cls.register_forward_hook(lambda module, args, out: seen.append(out - module.bias.view(1, -1, 1, 1)))
        with torch.no_grad():
            model([{"image": image}])
            hook.remove()
            std = float(torch.cat([t.flatten() for t in seen]).std().clamp_min(1e-12))
            cls.weight.mul_(logit_std / std)
            cls.bias.fill_(-4 * logit_std)
    return model


def run_detectron2_tools(calls: Sequence[Sequence[str]]) -> list:
    """Run Detectron2 tool scripts one after the other in this process, as ``python -m
    effvit_plugins.detectron2.run ARGV`` would (each call is that ARGV: the script, then its arguments): for
    several exports at the cost of one interpreter start. Returns one entry per call: ``None`` (it ran) or the
    formatted exception that ended it (the next call still runs)."""
    import traceback

    from .detectron2.run import main

    results = []
    for argv in calls:
        try:
            main(list(argv))
            results.append(None)
        except BaseException as e:  # noqa: B902  (SystemExit included: a tool's argparse error, our exit 2)
            results.append("".join(traceback.format_exception(type(e), e, e.__traceback__))[-6000:])
    return results


def detectron2_results(log: str) -> Dict[str, Dict[str, Optional[float]]]:
    """``{task: {metric: value}}`` from the ``copypaste:`` lines Detectron2's ``print_csv_format`` logs after an
    evaluation (``Task: bbox``, the metric names, their values); ``nan`` (no object of that kind) becomes None. The
    last evaluation in ``log`` wins."""
    res: Dict[str, Dict[str, Optional[float]]] = {}
    lines = re.findall(r"copypaste: (.*)", log)
    for i, line in enumerate(lines):
        if line.startswith("Task: "):
            values = [None if v == "nan" else float(v) for v in lines[i + 2].split(",")]
            res[line[6:]] = dict(zip(lines[i + 1].split(","), values))
    return res


def detector_with_detections(model: nn.Module, run: Callable[[], object], seed: int = 0) -> nn.Module:
    """An mmdet RetinaNet / Mask R-CNN with random weights made to detect: heads initialised as mmdet does, the layer
    before each classifier scaled so that its output on ``run()`` (one inference of the model, e.g. on a generated
    image) has unit standard deviation -- random backbones' features differ in scale by orders of magnitude, and
    saturated sigmoid / softmax scores are exactly equal, whose order is arbitrary in mmdet as in any runtime --
    and the classifiers biased so that many boxes pass the test score threshold with distinct scores. A RetinaNet's
    class logits are calibrated themselves (unit standard deviation, the best (anchor, class) at score 0.5) and its
    box deltas get a standard deviation of 0.1 (boxes move off their anchors). In place."""
    torch.manual_seed(seed)

    def outputs(layer):
        seen = []
        handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
        with torch.no_grad():
            run()
        handle.remove()
        return torch.cat([o.flatten() for o in seen])

    def calibrate(layers, target=1.0):
        for layer in layers:
            std = float(outputs(layer).std()) / target
            with torch.no_grad():
                layer.weight /= std
                layer.bias /= std

    if hasattr(model, "roi_head"):
        model.rpn_head.init_weights()
        model.roi_head.init_weights()
        bbox_head = model.roi_head.bbox_head
        calibrate([model.rpn_head.rpn_conv, *bbox_head.shared_fcs])
        nn.init.normal_(model.rpn_head.rpn_cls.weight, std=0.1)
        nn.init.normal_(bbox_head.fc_cls.weight, std=0.1)
        nn.init.normal_(bbox_head.fc_reg.weight, std=0.01)
        with torch.no_grad():  # classes 0-4 likely, background (last) unlikely: scores of about 0.1-0.2
            bbox_head.fc_cls.bias[:5] = 3.0
            bbox_head.fc_cls.bias[-1] = -5.0
    else:
        # the class logits themselves are calibrated (not only the layer before): with a fixed classifier init the
        # logits of some backbones reach 10-15, whose float32 sigmoid scores are 0.9999..., equal in long runs;
        # the order of equal scores, and with it which box NMS keeps, is then arbitrary. Here: unit standard
        # deviation, the best anchor at logit 0 (score 0.5), thousands of (anchor, class) pairs above a score_thr
        # of 0.05 (the nms_pre and max_per_img cuts both act); box deltas with a standard deviation of 0.1.
        head = model.bbox_head
        head.init_weights()
        calibrate([c.conv for c in head.cls_convs] + [c.conv for c in head.reg_convs])
        calibrate([head.retina_reg], target=0.1)
        nn.init.zeros_(head.retina_cls.bias)
        logits = outputs(head.retina_cls)
        std = float(logits.std())
        with torch.no_grad():
            head.retina_cls.weight /= std
            head.retina_cls.bias.fill_(-float(logits.max()) / std)
    return model.eval()
