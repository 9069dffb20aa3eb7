"""Tests of the MSRA EfficientViT (M0-M5) core: structure, complexity, timm parity, checkpoints, options."""
import pytest
import torch
import torch.nn as nn

from effvit_plugins.models.efficientvit_msra import (ARCH_SETTINGS, OFFICIAL_KEY_SIGNATURE,
                                                     EfficientViTMSRABackbone, EfficientViTMSRAClassifier,
                                                     convert_official_checkpoint)
from effvit_plugins.checkpoint import unwrap_state_dict
from effvit_plugins.models.layers import relative_bias_index
from effvit_plugins.utils.complexity import count_macs, count_params

import timm  # noqa: E402

VARIANTS = ["m0", "m1", "m2", "m3", "m4", "m5"]
# (params in M, MACs in G) of the official classifiers at 224 x 224
TARGETS = {"m0": (2.35, 0.079), "m1": (2.98, 0.167), "m2": (4.19, 0.201), "m3": (6.90, 0.263),
           "m4": (8.80, 0.299), "m5": (12.47, 0.522)}
DOWNSAMPLE_NAMES = ("res1", "patchmerge", "res2")


@pytest.fixture(autouse=True)
def _one_thread():
    # one intra-op thread: with 2 cores shared with other jobs, OpenMP thread contention makes small forwards
    # 10-100x slower than single-threaded ones
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------
def ours_to_timm_key(key):
    """Name of one of our Classifier's keys in timm's EfficientVitMsra (None: not stored by timm)."""
    if key.endswith("attention_bias_idxs"):
        return None  # non-persistent buffer in timm
    parts = key.split(".")
    if parts[0] == "head":
        rest = parts[1:]
        return ".".join(["head"] + ["linear" if p == "l" else p for p in rest])
    assert parts[0] == "backbone"
    parts = parts[1:]
    if parts[0] == "patch_embed":
        parts = ["patch_embed", f"conv{int(parts[1]) // 2 + 1}"] + parts[2:]
    elif parts[0] == "blocks1":
        parts = ["stages", "0", "blocks"] + parts[1:]
    else:
        stage, j = int(parts[0][len("blocks"):]) - 1, int(parts[1])
        if j < 3:
            parts = ["stages", str(stage), "downsample", DOWNSAMPLE_NAMES[j]] + parts[2:]
        else:
            parts = ["stages", str(stage), "blocks", str(j - 3)] + parts[2:]
    return ".".join("conv" if p == "c" else p for p in parts)


@torch.no_grad()
def randomize_(model, seed=0):
    """Random BN affine/statistics and attention biases so that no branch is trivial."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=g) * 0.6 + 0.2)
            m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    for name, p in model.named_parameters():
        if "attention_biases" in name:
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def timm_model(variant, **kw):
    torch.manual_seed(0)
    return randomize_(timm.create_model(f"efficientvit_{variant}", pretrained=False, **kw)).eval()


def timm_to_ours(tm, ours):
    tsd = tm.state_dict()
    new = {}
    for k in ours.state_dict():
        tk = ours_to_timm_key(k)
        if tk is not None:
            new[k] = tsd.pop(tk)
    assert not tsd, f"timm keys not mapped: {list(tsd)[:5]}"
    res = ours.load_state_dict(new, strict=False)
    assert not res.unexpected_keys
    assert all(k.endswith("attention_bias_idxs") for k in res.missing_keys)
    return ours


def official_layout_from_timm(tm, ours, two_d_pointwise=True, with_idxs=True):
    """Official Cream-style checkpoint (``{'model': ...}``) built by renaming timm's keys back."""
    tsd = tm.state_dict()
    off = {}
    for k in ours.state_dict():
        tk = ours_to_timm_key(k)
        ok = k[len("backbone."):] if k.startswith("backbone.") else k
        if tk is None:
            if with_idxs:
                r = int(round(ours.state_dict()[k].shape[0] ** 0.5))
                off[ok] = relative_bias_index((r, r), (r, r))[1]
            continue
        v = tsd[tk].clone()
        if two_d_pointwise and v.dim() == 4 and v.shape[-2:] == (1, 1) and "se." not in k:
            v = v.flatten(1)  # 1x1 conv weight stored 2-D
        off[ok] = v
    return {"model": off, "epoch": 299}


# ------------------------------------------------------------------------------------------------------------
# complexity
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_params_and_macs(variant):
    model = EfficientViTMSRAClassifier(variant)
    params, macs = count_params(model) / 1e6, count_macs(model, (1, 3, 224, 224)) / 1e9
    p_ref, m_ref = TARGETS[variant]
    assert abs(params - p_ref) / p_ref < 0.01, params
    assert abs(macs - m_ref) / m_ref < 0.02, macs


# ------------------------------------------------------------------------------------------------------------
# timm parity and checkpoints
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_timm_parity_224(variant):
    tm = timm_model(variant)
    ours = timm_to_ours(tm, EfficientViTMSRAClassifier(variant)).eval()
    # same key set as the official layout: timm's keys map one-to-one onto ours
    assert len(tm.state_dict()) == sum(not k.endswith("attention_bias_idxs") for k in ours.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = tm(x), ours(x)  # ours: BN folded into the convs at inference
    out_unfolded = ours(x).detach()  # grad enabled: plain conv + BN path
    assert ref.abs().max() > 1e-2  # not a trivial comparison
    assert (ref - out).abs().max().item() < 1e-4
    assert (ref - out_unfolded).abs().max().item() < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_checkpoint_conversion(variant):
    tm = timm_model(variant)
    ours = EfficientViTMSRAClassifier(variant).eval()
    ckpt = official_layout_from_timm(tm, ours, with_idxs=variant != "m2")  # m2: idxs absent -> regenerated
    assert any(v.dim() == 2 for k, v in ckpt["model"].items() if k.endswith("qkvs.0.c.weight"))
    assert all(any(s in k for k in ckpt["model"]) for s in OFFICIAL_KEY_SIGNATURE)
    if variant == "m1":  # DataParallel-saved
        ckpt = {"model": {"module." + k: v for k, v in ckpt["model"].items()}}
    sd = convert_official_checkpoint(unwrap_state_dict(ckpt))
    res = ours.load_state_dict(sd, strict=False)
    assert res.missing_keys == [] and res.unexpected_keys == []
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (tm(x) - ours(x)).abs().max().item() < 1e-4


def test_imagenet_checkpoint_into_dense_backbone():
    """ImageNet tables (stage 3: 4x4 window) load into the 7x7-window backbone; idxs regenerated."""
    tm = timm_model("m0")
    cls = EfficientViTMSRAClassifier("m0")
    sd = convert_official_checkpoint(official_layout_from_timm(tm, cls)["model"])
    bsd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    bb = EfficientViTMSRABackbone("m0")
    assert bb.window_sizes == [7, 7, 7]
    assert bsd["blocks3.3.mixer.m.attn.attention_biases"].shape == (4, 16)
    bb.load_state_dict(bsd, strict=True)
    attn = bb.blocks3[3].mixer.m.attn
    assert attn.attention_biases.shape == (4, 49) and attn.attention_bias_idxs.shape == (49, 49)
    # unchanged stage-1 table; resized table keeps the corner (offset 0) close to the original
    assert torch.equal(bb.blocks1[0].mixer.m.attn.attention_biases, bsd["blocks1.0.mixer.m.attn.attention_biases"])
    with torch.no_grad():
        outs = bb.eval()(torch.randn(1, 3, 224, 224))
    assert [o.shape[-1] for o in outs] == [14, 7, 4]


def test_dense_backbone_matches_timm_at_512():
    """Window partition + padding path (maps 32/16/8, windows 7) equals timm built for 512 (all windows 7)."""
    tm = timm_model("m1", img_size=512)
    bb = EfficientViTMSRABackbone("m1").eval()
    tsd = tm.state_dict()
    new = {}
    for k in bb.state_dict():
        tk = ours_to_timm_key("backbone." + k)
        if tk is not None:
            new[k] = tsd[tk]
    bb.load_state_dict(new, strict=False)
    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, out = tm.forward_intermediates(x, intermediates_only=True), bb(x)
    for r, o in zip(ref, out):
        assert r.shape == o.shape
        assert (r - o).abs().max().item() < 1e-4


def test_bias_for_small_window_comes_from_table():
    bb = EfficientViTMSRABackbone("m0")
    attn = bb.blocks3[3].mixer.m.attn
    with torch.no_grad():
        attn.attention_biases.copy_(torch.randn_like(attn.attention_biases))
    table = attn.attention_biases.view(attn.num_heads, 7, 7)
    for h, w in [(4, 4), (3, 5), (7, 2), (7, 7)]:
        bias = attn.attention_bias(h, w)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        expect = table[:, (ys[:, None] - ys[None]).abs(), (xs[:, None] - xs[None]).abs()]
        assert torch.equal(bias, expect)
    assert torch.equal(attn.attention_bias(7, 7), attn.attention_biases[:, attn.attention_bias_idxs])


# ------------------------------------------------------------------------------------------------------------
# backbone behaviour
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_feature_maps(variant):
    bb = EfficientViTMSRABackbone(variant).eval()
    dims = list(ARCH_SETTINGS[variant]["embed_dims"])
    assert bb.stage_channels == dims and bb.out_channels == dims
    assert bb.stage_strides == [16, 32, 64] and bb.out_strides == [16, 32, 64]
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, 128, 192))
    assert [tuple(o.shape) for o in outs] == [(1, c, 128 // s, 192 // s) for c, s in zip(dims, (16, 32, 64))]


def _down(n, times):
    for _ in range(times):
        n = (n + 1) // 2  # 3x3 stride-2 conv with padding 1
    return n


@pytest.mark.parametrize("size", [(224, 224), (512, 512), (800, 1216), (801, 1203), (96, 640)])
def test_any_input_size(size):
    """224 gives a 4x4 stride-64 map (official downstream code fails there); 96x640 mixes small/large dims."""
    bb = EfficientViTMSRABackbone("m0").eval()
    h, w = size
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, h, w))
    expected = [(1, c, _down(h, k), _down(w, k)) for c, k in zip(bb.out_channels, (4, 5, 6))]
    assert [tuple(o.shape) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


def test_classifier_other_sizes_and_small_maps():
    cls = EfficientViTMSRAClassifier("m0").eval()
    assert cls.backbone.window_sizes == [7, 7, 4]
    with torch.no_grad():
        for size in [(160, 160), (512, 512), (96, 320)]:
            assert cls(torch.randn(1, 3, *size)).shape == (1, 1000)


def test_drop_path():
    bb = EfficientViTMSRABackbone("m0", drop_path_rate=0.2)
    rates = [m.drop_path.drop_prob for m in bb.modules() if hasattr(m, "drop_path") and
             hasattr(m.drop_path, "drop_prob")]
    assert rates and max(rates) == pytest.approx(0.2)
    bb.train()
    x = torch.randn(4, 3, 64, 64)
    bb(x)[-1].sum().backward()
    bb.eval()
    with torch.no_grad():
        assert torch.equal(bb(x)[-1], bb(x)[-1])
    assert not any(hasattr(m, "drop_prob") for m in EfficientViTMSRABackbone("m0").modules())


def test_eval_bias_cache_follows_updates():
    bb = randomize_(EfficientViTMSRABackbone("m0")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = bb(x)[0]
        for m in bb.modules():
            if hasattr(m, "attention_biases"):
                m.attention_biases.add_(1.0 + torch.randn_like(m.attention_biases))
        b = bb(x)[0]
        bn = bb.blocks1[0].ffn0.m.pw2.bn
        bn.running_var.mul_(4.0)  # in-place change of BN statistics: folded conv weights must follow
        c = bb(x)[0]
    assert not torch.allclose(a, b)
    assert not torch.allclose(b, c)
    with torch.enable_grad():
        assert torch.allclose(bb(x)[0], c, atol=1e-5)
