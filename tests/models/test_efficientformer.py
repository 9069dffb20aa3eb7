"""Tests of the EfficientFormer V1/V2 cores (effvit_plugins.models.efficientformer_v1 / _v2).

timm parity: timm models are built on the meta device (fast), materialised with random weights, random BN
statistics, random attention biases and random layer scales, mapped to the *official* checkpoint layout by the key
maps below (inverse of timm's V1 filter, and the V2 name correspondence), wrapped as ``{'model': ...}`` like an
official release file, converted with ``convert_official_checkpoint`` and loaded strictly into our classifier.
"""
import math
import re

import pytest
import torch
import torch.nn as nn

import timm

from effvit_plugins.checkpoint import unwrap_state_dict
from effvit_plugins.models import efficientformer_v1, efficientformer_v2
from effvit_plugins.models.efficientformer_v1 import convert_official_checkpoint
from effvit_plugins.models.layers import biased_attention, resize_bias_map
from effvit_plugins.utils.complexity import count_macs, count_params

ARCH_SETTINGS = {**efficientformer_v1.ARCH_SETTINGS, **efficientformer_v2.ARCH_SETTINGS}


def _module(arch):
    return efficientformer_v1 if arch in efficientformer_v1.ARCH_SETTINGS else efficientformer_v2


def EfficientFormerBackbone(arch, **kw):  # noqa: N802  (the V1 or V2 backbone, by variant name)
    mod = _module(arch)
    return (mod.EfficientFormerV1Backbone if mod is efficientformer_v1 else mod.EfficientFormerV2Backbone)(arch, **kw)


def EfficientFormerClassifier(arch, **kw):  # noqa: N802
    mod = _module(arch)
    cls = mod.EfficientFormerV1Classifier if mod is efficientformer_v1 else mod.EfficientFormerV2Classifier
    return cls(arch, **kw)


def infer_arch(sd):
    return efficientformer_v2.infer_arch(sd) if any(".mlp.mid." in k for k in sd) else efficientformer_v1.infer_arch(sd)

V1 = ("l1", "l3", "l7")
V2 = ("s0", "s1", "s2", "l")
ALL = V1 + V2

TIMM_NAMES = {
    "l1": "efficientformer_l1", "l3": "efficientformer_l3", "l7": "efficientformer_l7",
    "s0": "efficientformerv2_s0", "s1": "efficientformerv2_s1", "s2": "efficientformerv2_s2",
    "l": "efficientformerv2_l",
}

# (params, MACs) at 224 with head + distillation head (official code, measured; architectures.md §4.1/§4.2)
TARGETS = {
    "l1": (12.29e6, 1.29e9), "l3": (31.41e6, 3.91e9), "l7": (82.23e6, 10.12e9),
    "s0": (3.60e6, 0.396e9), "s1": (6.19e6, 0.652e9), "s2": (12.71e6, 1.247e9), "l": (26.32e6, 2.553e9),
}

CHANNELS = {
    "l1": [48, 96, 224, 448], "l3": [64, 128, 320, 512], "l7": [96, 192, 384, 768],
    "s0": [32, 48, 96, 176], "s1": [32, 48, 120, 224], "s2": [32, 64, 144, 288], "l": [40, 80, 192, 384],
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """One intra-op thread: on the shared 2-core CI machine, OpenMP threads competing with other processes make
    small CPU forwards orders of magnitude slower. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _meta(cls, *args, **kwargs):
    with torch.device("meta"):
        return cls(*args, **kwargs)


# ------------------------------------------------------------------------------------------------------------
# timm -> official key maps
# ------------------------------------------------------------------------------------------------------------
def _timm_to_official_v1(key: str) -> str:
    for src, dst in (("stem.conv1.", "patch_embed.0."), ("stem.norm1.", "patch_embed.1."),
                     ("stem.conv2.", "patch_embed.3."), ("stem.norm2.", "patch_embed.4.")):
        if key.startswith(src):
            return dst + key[len(src):]
    m = re.match(r"stages\.(\d+)\.downsample\.(conv|norm)\.(.+)$", key)
    if m:
        return f"network.{2 * int(m[1]) - 1}.{'proj' if m[2] == 'conv' else 'norm'}.{m[3]}"
    m = re.match(r"stages\.(\d+)\.blocks\.(.+)$", key)
    if m:
        key = f"network.{2 * int(m[1])}.{m[2]}"
    key = re.sub(r"ls([12])\.gamma$", r"layer_scale_\1", key)
    return re.sub(r"^head_dist\.", "dist_head.", key)


_V2_RULES = [
    (r"^stem\.conv1\.conv\.", "patch_embed.0."), (r"^stem\.conv1\.bn\.", "patch_embed.1."),
    (r"^stem\.conv2\.conv\.", "patch_embed.3."), (r"^stem\.conv2\.bn\.", "patch_embed.4."),
    (r"^stages\.3\.downsample\.conv\.conv\.", "network.5.conv."),
    (r"^stages\.3\.downsample\.conv\.bn\.", "network.5.bn."),
    (r"^stages\.3\.downsample\.attn\.", "network.5.attn."),
    (r"^stages\.(\d)\.downsample\.conv\.conv\.", lambda m: f"network.{2 * int(m[1]) - 1}.proj."),
    (r"^stages\.(\d)\.downsample\.conv\.bn\.", lambda m: f"network.{2 * int(m[1]) - 1}.norm."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"network.{2 * int(m[1])}.{m[2]}."),
    (r"\.mlp\.fc1\.conv\.", ".mlp.fc1."), (r"\.mlp\.fc1\.bn\.", ".mlp.norm1."),
    (r"\.mlp\.mid\.conv\.", ".mlp.mid."), (r"\.mlp\.mid\.bn\.", ".mlp.mid_norm."),
    (r"\.mlp\.fc2\.conv\.", ".mlp.fc2."), (r"\.mlp\.fc2\.bn\.", ".mlp.norm2."),
    (r"\.q\.local\.", ".q.local.0."), (r"\.q\.proj\.conv\.", ".q.proj.0."), (r"\.q\.proj\.bn\.", ".q.proj.1."),
    (r"\.(q|k|v|v_local|stride_conv)\.conv\.", r".\1.0."), (r"\.(q|k|v|v_local|stride_conv)\.bn\.", r".\1.1."),
    (r"\.proj\.conv\.", ".proj.1."), (r"\.proj\.bn\.", ".proj.2."),
    (r"\.ls([12])\.gamma$", r".layer_scale_\1"),
    (r"^head_dist\.", "dist_head."),
]


def _timm_to_official_v2(key: str) -> str:
    for pat, rep in _V2_RULES:
        key = re.sub(pat, rep, key)
    return key


def _random_timm(arch: str, seed: int = 0) -> nn.Module:
    """timm model with random weights, BN statistics, attention biases and layer scales (built on meta)."""
    with torch.device("meta"):
        model = timm.create_model(TIMM_NAMES[arch], pretrained=False)
    model = model.to_empty(device="cpu")
    if arch in V1:  # persistent index buffer computed in __init__ (lost by to_empty): take it from a real module
        ref = timm.models.efficientformer.Attention(dim=8).attention_bias_idxs
        for m in model.modules():
            if isinstance(m, timm.models.efficientformer.Attention):
                m.attention_bias_idxs.copy_(ref)
    else:
        for m in model.modules():
            if hasattr(m, "init_non_persistent_buffers"):
                m.init_non_persistent_buffers()
    g = torch.Generator().manual_seed(seed)

    def rand(shape, lo, hi):
        return torch.rand(shape, generator=g) * (hi - lo) + lo

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("attention_biases"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif ".ls" in name and name.endswith("gamma"):
                p.copy_(rand(p.shape, 0.05, 0.3))
            elif p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif name.endswith("weight"):  # norm scales
                p.copy_(rand(p.shape, 0.6, 1.4))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(rand(b.shape, 0.5, 2.0))
            elif name.endswith("num_batches_tracked"):
                b.zero_()
    return model.eval()


def _official_state_dict_from_timm(arch: str, timm_model: nn.Module, ours: nn.Module) -> dict:
    """Official-layout state dict (as in the released ``.pth`` files) holding the timm model's weights.

    The bias tables are re-indexed: for every (query, key) pair the value timm adds must be what the official
    table (LeViT offset order, taken from our model's index buffer) adds.
    """
    to_official = _timm_to_official_v1 if arch in V1 else _timm_to_official_v2
    timm_sd = timm_model.state_dict()
    official = {}
    for k, v in timm_sd.items():
        if k.endswith("attention_bias_idxs"):
            continue
        ok = to_official(k)
        if k.endswith("attention_biases"):
            timm_idx = timm_model.get_submodule(k.rsplit(".", 1)[0]).attention_bias_idxs
            our_idx = ours.backbone.get_submodule(ok.rsplit(".", 1)[0]).attention_bias_idxs
            assert timm_idx.shape == our_idx.shape
            full = v[:, timm_idx]  # (heads, Nq, Nk) bias that timm adds
            table = torch.full((v.shape[0], int(our_idx.max()) + 1), float("nan"))
            table[:, our_idx.reshape(-1)] = full.reshape(v.shape[0], -1)
            assert not torch.isnan(table).any()
            assert torch.equal(table[:, our_idx], full), "offset orderings disagree"
            v = table
            official[ok.rsplit(".", 1)[0] + ".attention_bias_idxs"] = our_idx.clone()  # stored officially
        elif re.search(r"ls[12]\.gamma$", k) and arch in V2:
            v = v.reshape(-1, 1, 1)  # official V2 layer scales are (C, 1, 1)
        official[ok] = v
    return official


# ------------------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ALL)
def test_params_and_macs_at_224(arch):
    model = _meta(EfficientFormerClassifier, arch)
    params, macs = count_params(model), count_macs(model, (1, 3, 224, 224))
    p_ref, m_ref = TARGETS[arch]
    assert abs(params - p_ref) / p_ref < 0.01, params
    assert abs(macs - m_ref) / m_ref < 0.02, macs


@pytest.mark.parametrize("arch", ALL)
def test_timm_parity_through_official_checkpoint(arch):
    timm_model = _random_timm(arch)
    ours = _meta(EfficientFormerClassifier, arch)
    official = _official_state_dict_from_timm(arch, timm_model, ours)
    assert "dist_head.weight" in official and "patch_embed.4.running_var" in official
    assert any(k.startswith("network.6.") and "token_mixer" in k for k in official)
    converted = convert_official_checkpoint(unwrap_state_dict({"model": official}))
    result = ours.load_state_dict(converted, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert infer_arch(official) == arch and infer_arch(converted) == arch
    ours.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = timm_model(x)
        out = ours(x)
        out2 = ours(x)  # cached biases
    assert ref.abs().max() > 0.05  # non-trivial logits
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(out2, out, atol=0, rtol=0)


def _check_maps(outs, arch, h, w):
    assert len(outs) == 4
    for o, c, s in zip(outs, CHANNELS[arch], (4, 8, 16, 32)):
        assert tuple(o.shape) == (1, c, math.ceil(h / s), math.ceil(w / s))


@pytest.mark.parametrize("arch", ALL)
def test_feature_maps_every_variant(arch):
    """Strides/channels of every variant, shapes checked on the meta device (no arithmetic)."""
    model = _meta(EfficientFormerBackbone, arch).eval()
    assert model.stage_channels == CHANNELS[arch] and model.stage_strides == [4, 8, 16, 32]
    assert model.out_channels == CHANNELS[arch] and model.out_strides == [4, 8, 16, 32]
    sizes = [(801, 1203)] + ([(224, 224), (512, 512), (800, 1216)] if arch in ("l1", "s0") else [])
    for h, w in sizes:
        _check_maps(model(torch.empty(1, 3, h, w, device="meta")), arch, h, w)


@pytest.mark.parametrize("arch", ["l1", "s0"])
def test_real_forward_other_sizes(arch):
    """Real arithmetic at 512x512 and 801x1203 (not a multiple of 32: odd stride-16 map, so V2's upsampled
    stride-2 attention output is cropped and the strided layers round up; the official V2 code fails there)."""
    torch.manual_seed(0)
    model = EfficientFormerBackbone(arch).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "attention_biases" in name:
                p.normal_()
        for h, w in ((512, 512), (801, 1203)):
            outs = model(torch.randn(1, 3, h, w))
            _check_maps(outs, arch, h, w)
            assert all(torch.isfinite(o).all() for o in outs)


def test_v1_output_norms():
    bb = _meta(EfficientFormerBackbone, "l1")
    for i in (0, 2, 4, 6):
        assert isinstance(getattr(bb, f"norm{i}"), nn.GroupNorm)
    bb = _meta(EfficientFormerBackbone, "l1", out_indices=(1, 3))
    assert hasattr(bb, "norm2") and hasattr(bb, "norm6") and not hasattr(bb, "norm0")
    cls = _meta(EfficientFormerClassifier, "l1")
    assert not any(k.startswith("backbone.norm") for k in cls.state_dict())
    assert not hasattr(_meta(EfficientFormerBackbone, "s0"), "norm0")  # V2: no output norm (official)


def test_attention_bias_exact_resized_and_cached():
    torch.manual_seed(0)
    bb = EfficientFormerBackbone("s0").eval()
    attn = bb.network[6][-1].token_mixer  # stage-4 attention, table for 7x7
    down = bb.network[5].attn  # attention downsampling, table for 14x14 -> 7x7
    with torch.no_grad():
        attn.attention_biases.normal_()
        down.attention_biases.normal_()
    exact = attn.attention_biases[:, attn.attention_bias_idxs]
    assert torch.equal(attn.attention_bias(49, 49, torch.float32), exact)
    assert down.attention_bias(49, 196, torch.float32).shape == (8, 49, 196)
    big = attn.attention_bias(256, 256, torch.float32)
    torch.testing.assert_close(big, resize_bias_map(exact.detach(), (256, 256)))
    assert attn.attention_bias(256, 256, torch.float32) is big  # cached in eval
    with torch.no_grad():
        attn.attention_biases.add_(1.0)  # in-place change (e.g. load_state_dict) invalidates the cache
    assert torch.allclose(attn.attention_bias(256, 256, torch.float32), big + 1.0, atol=1e-4)
    # a bias cached under inference_mode is usable outside it (eval forward with autograd enabled)
    attn.clear_bias_cache()
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        ref = bb(x)[-1].clone()
    torch.testing.assert_close(bb(x)[-1], ref)
    # training: gradients reach the table at any size
    bb.train()
    bias = attn.attention_bias(100, 100, torch.float32)
    assert bias.requires_grad
    bias.sum().backward()
    assert attn.attention_biases.grad is not None and attn.attention_biases.grad.abs().sum() > 0


def test_classifier_train_returns_pair_and_eval_averages():
    torch.manual_seed(0)
    model = EfficientFormerClassifier("s0", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    out, dist = model(x)
    assert out.shape == dist.shape == (2, 10)
    model.eval()
    with torch.no_grad():
        feats = model.backbone(x)
        h = model.head
        pooled = h.pre_logits(feats)
        torch.testing.assert_close(model(x), (h.head(pooled) + h.dist_head(pooled)) / 2)


def test_converter_handles_prefixes_and_drop_path():
    ours = _meta(EfficientFormerClassifier, "s0")
    sd = {"module." + k.split(".", 1)[1]: v for k, v in ours.state_dict().items()}  # official names
    sd["module.network.6.3.token_mixer.attention_bias_idxs"] = torch.zeros(49, 49, dtype=torch.long)
    converted = convert_official_checkpoint(unwrap_state_dict({"model": sd}))
    assert set(converted) == set(ours.state_dict())
    bb = _meta(EfficientFormerBackbone, "l", drop_path_rate=0.1)
    rates = [m.drop_prob for m in bb.modules() if m.__class__.__name__ == "DropPath"]
    assert len(rates) == sum(ARCH_SETTINGS["l"]["depths"]) - 1 and max(rates) == pytest.approx(0.1)


def test_fused_and_plain_attention_agree():
    """The CUDA path (fused SDPA) and the CPU path (matmuls) compute the same biased attention."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 8, n, d, generator=g) for n, d in ((49, 16), (196, 16), (196, 64)))
    bias = torch.randn(8, 49, 196, generator=g)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=16 ** -0.5)
    torch.testing.assert_close(biased_attention(q, k, v, bias, 16 ** -0.5), ref, atol=1e-5, rtol=1e-5)


def test_bias_cache_follows_loaded_weights():
    torch.manual_seed(0)
    model = EfficientFormerClassifier("l1", num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        sd = {k: (v + torch.randn_like(v) if k.endswith("attention_biases") else v)
              for k, v in model.state_dict().items()}
        for assign in (False, True):
            fresh = EfficientFormerClassifier("l1", num_classes=5).eval()
            fresh.load_state_dict(sd)
            model.load_state_dict(sd, assign=assign)
            torch.testing.assert_close(model(x), fresh(x))
    assert not torch.allclose(before, model(x))
