"""The backbone contract, checked the same way for every family and every variant (modelled on timm's
tests/test_models.py): feature maps and their metadata, out_indices, frozen_stages (mmdet meaning, through the
OpenMMLab adapter after init_weights), norm_eval, drop_path, empty batches, odd sizes with real arithmetic,
input-channel and arch errors, pickling, forward_intermediates and gradient checkpointing.

Family-specific behaviour (official numbers, timm parity, checkpoints, attention details) lives in the per-family
files next to this one.
"""
import math
import pickle

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from effvit_plugins.models import edgevit, efficientformer_v1, efficientformer_v2, efficientvit_mit, efficientvit_msra

# family key -> (core module, core backbone class, OpenMMLab name, supports drop_path_rate)
FAMILIES = {
    "efficientvit_mit": (efficientvit_mit, efficientvit_mit.EfficientViTMITBackbone, "EfficientViTMIT", False),
    "efficientvit_msra": (efficientvit_msra, efficientvit_msra.EfficientViTMSRABackbone, "EfficientViTMSRA", True),
    "edgevit": (edgevit, edgevit.EdgeViTBackbone, "EdgeViT", True),
    "efficientformer_v1": (efficientformer_v1, efficientformer_v1.EfficientFormerV1Backbone, "EfficientFormerV1",
                           True),
    "efficientformer_v2": (efficientformer_v2, efficientformer_v2.EfficientFormerV2Backbone, "EfficientFormerV2",
                           True),
}
VARIANTS = [(fam, arch) for fam, (mod, *_rest) in FAMILIES.items() for arch in mod.ARCH_SETTINGS]
SMALLEST = {
    "efficientvit_mit": "b0", "efficientvit_msra": "m0", "edgevit": "xxs", "efficientformer_v1": "l1",
    "efficientformer_v2": "s0"}
SMALL = sorted(SMALLEST.items())
ids = [f"{f}-{a}" for f, a in VARIANTS]
# ~100M+ parameters: real arithmetic on these costs tens of seconds on 2 cores, so they are checked on the meta
# device (shapes, freezing pattern) while every other variant runs for real.
BIG = {("efficientvit_mit", "l3"), ("efficientformer_v1", "l7")}


@pytest.fixture(autouse=True, scope="module")
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def core(fam, arch, **kw):
    return FAMILIES[fam][1](arch, **kw)


def fast(model: nn.Module, seed: int = 0) -> nn.Module:
    """A model built on the meta device, materialised on the CPU with cheap random weights (building the big
    variants with their real initialisers takes seconds)."""
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.fill_(1.0)
            elif "layer_scale" in name:
                p.fill_(0.1)
            else:
                p.zero_()
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.fill_(1.0)
            elif name.endswith(("running_mean", "num_batches_tracked")):
                b.zero_()
    for m in model.modules():  # derived index buffers (to_empty left them uninitialised)
        if hasattr(m, "init_non_persistent_buffers"):
            m.init_non_persistent_buffers()
    return randomize(model, seed)


def adapter(fam, arch, device=None, **kw):
    """Built the way a user's config builds it: through mmdet's registry."""
    from mmengine.registry import DefaultScope
    from mmdet.registry import MODELS

    import effvit_plugins  # noqa: F401

    with DefaultScope.overwrite_default_scope("mmdet"):
        if device is None:
            return MODELS.build(dict(type=FAMILIES[fam][2], arch=arch, **kw))
        with torch.device(device):
            return MODELS.build(dict(type=FAMILIES[fam][2], arch=arch, **kw))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics/affines and attention biases (an untrained BN is close to the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
        for name, p in model.named_parameters():
            if "attention_biases" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def expected_shapes(m, n, h, w):
    return [(n, c, math.ceil(h / s), math.ceil(w / s)) for c, s in zip(m.out_channels, m.out_strides)]


# ------------------------------------------------------------------------------------------------------------
# feature maps
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fam,arch", VARIANTS, ids=ids)
def test_feature_info_and_real_forward_at_odd_size(fam, arch):
    m = core_meta(fam, arch, out_indices=tuple(range(len(core_meta(fam, arch).feature_info))))
    if (fam, arch) not in BIG:
        m = fast(m)
    m.eval()
    info = m.feature_info
    assert [f["index"] for f in info] == list(range(m.num_stages))
    assert m.stage_channels == [f["num_chs"] for f in info] and m.stage_strides == [f["reduction"] for f in info]
    assert m.stage_strides == sorted(m.stage_strides) and all(
        b == 2 * a for a, b in zip(m.stage_strides, m.stage_strides[1:]))
    for f in info:  # the named module exists
        m.get_submodule(f["module"])
    x = torch.randn(1, 3, 97, 131, device=next(m.parameters()).device)
    with torch.no_grad():
        outs = m(x)
    assert [tuple(o.shape) for o in outs] == expected_shapes(m, 1, 97, 131)
    if (fam, arch) not in BIG:
        assert all(o.is_contiguous() and torch.isfinite(o).all() for o in outs)
        assert len({round(o.std().item(), 6) for o in outs}) == len(outs)  # real, distinct maps


def core_meta(fam, arch, **kw):
    with torch.device("meta"):
        return core(fam, arch, **kw)


@pytest.mark.parametrize("fam,arch", SMALL, ids=[f for f, _ in SMALL])
def test_real_forward_at_large_odd_size(fam, arch):
    """801x1203 (odd maps at every stride; the official MSRA/EdgeViT/EfficientFormer-V2 code fails at such sizes)."""
    m = randomize(core(fam, arch)).eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 801, 1203))
    assert [tuple(o.shape) for o in outs] == expected_shapes(m, 1, 801, 1203)
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("fam,arch", VARIANTS, ids=ids)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_empty_batch(fam, arch, training):
    """mmdet can feed a batch of 0 images: empty maps of the right shape, no error."""
    m = core_meta(fam, arch) if arch not in SMALLEST.values() else core(fam, arch)
    m.train(training)
    x = torch.empty(0, 3, 97, 131, device=next(m.parameters()).device)
    outs = m(x)
    assert [tuple(o.shape) for o in outs] == expected_shapes(m, 0, 97, 131)
    inter = m.forward_intermediates(x, intermediates_only=True)
    assert [tuple(o.shape[1:]) for o in inter] == [
        (c, math.ceil(97 / s), math.ceil(131 / s)) for c, s in zip(m.stage_channels, m.stage_strides)]


@pytest.mark.parametrize("fam,arch", SMALL, ids=[f for f, _ in SMALL])
def test_out_indices(fam, arch):
    m = randomize(core(fam, arch, out_indices=tuple(range(len(core_meta(fam, arch).feature_info))))).eval()
    n = m.num_stages
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        full = m(x)
    sel = (n - 1, 0)  # any order, any subset
    m2 = core(fam, arch, out_indices=sel)
    res = m2.load_state_dict(m.state_dict(), strict=False)  # (EfficientFormer V1: no norms for unused maps)
    assert not res.missing_keys and all(k.startswith("norm") for k in res.unexpected_keys)
    m2.eval()
    with torch.no_grad():
        part = m2(x)
    assert m2.out_channels == [m.stage_channels[i] for i in sel]
    assert m2.out_strides == [m.stage_strides[i] for i in sel]
    for o, i in zip(part, sel):
        torch.testing.assert_close(o, full[i], rtol=1e-4, atol=1e-4)
    assert core_meta(fam, arch, out_indices=(-1,)).out_indices == (n - 1,)
    for bad, msg in (((n,), "out of range"), ((0, 0), "twice"), ((), "empty")):
        with pytest.raises(ValueError, match=msg):
            core_meta(fam, arch, out_indices=bad)


# ------------------------------------------------------------------------------------------------------------
# frozen_stages / norm_eval / drop_path
# ------------------------------------------------------------------------------------------------------------
def _owned(modules):
    return {id(p) for mod in modules for p in mod.parameters()} | {id(b) for mod in modules for b in mod.buffers()}


@pytest.mark.parametrize("fam,arch", VARIANTS, ids=ids)
def test_frozen_stages_through_adapter_after_init_weights(fam, arch, tmp_path):
    """frozen_stages=1 freezes the stem and the FIRST stage only (mmdet/mmpretrain meaning). After init_weights
    (for the smallest variants: loading a checkpoint file) and an optimizer step with momentum and weight decay,
    every frozen parameter and BN statistic is bit-identical and everything else has moved."""
    small = arch == SMALLEST[fam]
    if (fam, arch) in BIG:
        m = adapter(fam, arch, device="meta", frozen_stages=1)
    elif small:
        torch.manual_seed(0)
        ckpt = tmp_path / "backbone.pth"
        torch.save(core(fam, arch).state_dict(), ckpt)
        m = adapter(fam, arch, frozen_stages=1, init_cfg=dict(type="Pretrained", checkpoint=str(ckpt)))
    else:
        m = fast(adapter(fam, arch, device="meta", frozen_stages=1))
    if (fam, arch) not in BIG:  # (mmengine's init bookkeeping reads tensor values: not on the meta device)
        m.init_weights()
    m.train()
    registered = {id(x) for x in m.modules()}
    frozen_mods = [sub for mod in m.stem_modules() + m.stage_modules()[:1] for sub in mod.modules()
                   if id(sub) in registered]
    frozen = {id(t) for sub in frozen_mods for t in list(sub.parameters()) + list(sub.buffers())}
    assert frozen, "the stem + first stage own no parameters?"
    for name, p in m.named_parameters():
        assert p.requires_grad == (id(p) not in frozen), name
    assert not any(sub.training for sub in frozen_mods)
    assert all(sub.training for mod in m.stage_modules()[1:] for sub in mod.modules()
               if id(sub) in registered and not any(id(p) in frozen for p in sub.parameters()))
    if (fam, arch) in BIG:
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
    moved = [k for k in before if k not in frozen_names and k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert moved, "nothing outside the frozen stages was trained"


@pytest.mark.parametrize("fam,arch", SMALL, ids=[f for f, _ in SMALL])
def test_frozen_stages_range(fam, arch):
    m = core_meta(fam, arch)
    k = len(m.stage_modules())
    m0 = core_meta(fam, arch, frozen_stages=0)
    assert m0.frozen_modules() == m0.stem_modules() and m0.stem_modules()
    full = core_meta(fam, arch, frozen_stages=k)
    assert all(not p.requires_grad for p in full.parameters())
    assert all(p.requires_grad for p in core_meta(fam, arch, frozen_stages=-1).parameters())
    with pytest.raises(ValueError, match=r"frozen_stages must be an int in \[-1, %d\]" % k):
        core_meta(fam, arch, frozen_stages=k + 1)


@pytest.mark.parametrize("fam,arch", SMALL, ids=[f for f, _ in SMALL])
def test_norm_eval(fam, arch):
    m = core(fam, arch, norm_eval=True).train()
    bns = [x for x in m.modules() if isinstance(x, _BatchNorm)]
    assert bns and all(not b.training for b in bns) and m.training
    before = [b.running_mean.clone() for b in bns]
    sum(o.mean() for o in m(torch.randn(2, 3, 64, 64))).backward()
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before, bns))
    m2 = core(fam, arch, norm_eval=False).train()
    m2(torch.randn(2, 3, 64, 64))
    assert any(not torch.equal(torch.zeros_like(b.running_mean), b.running_mean)
               for b in m2.modules() if isinstance(b, _BatchNorm))


DROP_PATH = [(f, a) for f, a in SMALL if FAMILIES[f][3]]


@pytest.mark.parametrize("fam,arch", DROP_PATH, ids=[f for f, _ in DROP_PATH])
def test_drop_path(fam, arch):
    torch.manual_seed(0)
    m = core(fam, arch, drop_path_rate=0.3, norm_eval=True).train()  # BN fixed: only drop_path is random
    x = torch.randn(4, 3, 64, 64)
    a, b = m(x)[-1], m(x)[-1]
    assert not torch.allclose(a, b), "two training-mode forwards with drop_path_rate > 0 must differ"
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x)[-1], m(x)[-1])
    plain = core(fam, arch, drop_path_rate=0.0, norm_eval=True).train()
    torch.testing.assert_close(plain(x)[-1], plain(x)[-1], rtol=0, atol=0)


def test_mit_has_no_drop_path():
    """The official EfficientViT-MIT backbone has no stochastic depth: the option does not exist."""
    with pytest.raises(TypeError):
        core("efficientvit_mit", "b0", drop_path_rate=0.1)


# ------------------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fam,arch", SMALL, ids=[f for f, _ in SMALL])
def test_wrong_input_channels(fam, arch):
    m = core(fam, arch, in_channels=4).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 4, 64, 64))[0].shape[0] == 1
    with pytest.raises(ValueError, match=r"expects an input of shape \(N, 4, H, W\).*in_channels=3"):
        m(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expects an input of shape"):
        m(torch.randn(3, 64, 64))


@pytest.mark.parametrize("fam", sorted(FAMILIES))
def test_arch_required_unknown_and_dict(fam):
    mod, cls = FAMILIES[fam][:2]
    names = list(mod.ARCH_SETTINGS)
    with pytest.raises(ValueError, match="`arch` is required"):
        cls()
    with pytest.raises(ValueError) as err:
        cls("nope")
    assert all(n in str(err.value) for n in names)
    settings = dict(mod.ARCH_SETTINGS[SMALLEST[fam]])
    with torch.device("meta"):
        named, custom = cls(SMALLEST[fam]), cls(dict(settings))
    assert [p.shape for p in named.parameters()] == [p.shape for p in custom.parameters()]
    key = sorted(settings)[0]
    with pytest.raises(ValueError, match=rf"missing \['{key}'\]"):
        cls({k: v for k, v in settings.items() if k != key})
    with pytest.raises(ValueError, match=r"unknown \['widht'\]"):
        cls(dict(settings, widht=3))


def test_efficientformer_versions_do_not_mix():
    with pytest.raises(ValueError, match="Valid variants: s0, s1, s2, l"):
        adapter("efficientformer_v2", None)
    with pytest.raises(ValueError, match="Unknown EfficientFormer-V2 variant 'l1'"):
        adapter("efficientformer_v2", "l1")
    with pytest.raises(ValueError, match="Unknown EfficientFormer-V1 variant 's0'"):
        adapter("efficientformer_v1", "s0")


# ------------------------------------------------------------------------------------------------------------
# pickling, forward_intermediates, gradient checkpointing
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fam,arch", SMALL, ids=[f for f, _ in SMALL])
def test_pickle_and_forward_intermediates(fam, arch):
    m = randomize(adapter(fam, arch)).eval()
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
        final, all_maps = m.forward_intermediates(x)
        last = m.forward_intermediates(x, indices=1, intermediates_only=True)
    for a, b in zip(ref, inter):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(all_maps) == m.num_stages and final.shape[1] == m.stage_channels[-1]
    assert len(last) == 1 and last[0].shape == all_maps[-1].shape


@pytest.mark.parametrize("fam,arch", SMALL, ids=[f for f, _ in SMALL])
def test_grad_checkpointing_same_result(fam, arch):
    torch.manual_seed(0)
    m = randomize(core(fam, arch, norm_eval=True)).train()
    x = torch.randn(2, 3, 64, 64)

    block = m.feature_steps()[-1][-1]
    calls = []
    block.register_forward_pre_hook(lambda *a: calls.append(1))  # (recomputation may stop early)

    def run(enable):
        m.zero_grad()
        calls.clear()
        m.set_grad_checkpointing(enable)
        outs = m(x)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        return [o.detach() for o in outs], {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    (o1, g1) = run(False)
    assert len(calls) == 1
    (o2, g2) = run(True)
    assert m.grad_checkpointing and len(calls) == 2  # recomputed in the backward pass
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert g1.keys() == g2.keys() and len(g1) > 10
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-4, atol=1e-5, msg=k)
