"""EdgeViT core (effvit_plugins.models.edgevit): what is specific to this family.

EdgeViT is in neither timm nor mmpretrain, so the oracle for the official names and values is written here,
independently of the package: the official key layout derived from the documented structure of the official
``src/edgevit.py`` (:func:`official_keys`), and the official computation re-derived with plain torch ops from an
official-layout state dict (:func:`ref_forward`, float64).

The shared backbone behaviour is tested for every family in test_backbone_contract.py.
"""
import pytest
import torch
import torch.nn.functional as F

from effvit_plugins.models.edgevit import (
    OFFICIAL_KEY_SIGNATURE,
    EdgeViTBackbone,
    EdgeViTClassifier,
    convert_official_checkpoint,
)

VARIANTS = ["xxs", "xs", "s"]

# Our measurements of the official saic-fi/edgevit code (src/edgevit.py; arXiv 2205.03436): params and MACs at 224 with
# the head, asserted within their rounding. The repository publishes no figures; the 4.1 / 6.7 / 11.1M quoted in other
# projects' tables do not match the official code for XS and S (6.77M, 13.11M), so they are not asserted. EdgeViT is not
# in timm: no exact count to compare with.
OFFICIAL_PARAMS = {"xxs": "4.07M", "xs": "6.77M", "s": "13.11M"}
OFFICIAL_MACS_224 = {"xxs": "0.551G", "xs": "1.128G", "s": "1.911G"}

# Official variant facts (edgevit_xxs / edgevit_xs / edgevit_s in saic-fi/edgevit src/edgevit.py), written out
# independently of ARCH_SETTINGS.
OFFICIAL_ARCH = {
    "xxs": dict(dims=[36, 72, 144, 288], depths=[1, 1, 3, 2], heads=[1, 2, 4, 8]),
    "xs": dict(dims=[48, 96, 240, 384], depths=[1, 1, 3, 1], heads=[1, 2, 5, 8]),
    "s": dict(dims=[48, 96, 240, 384], depths=[1, 2, 5, 3], heads=[1, 2, 5, 8]),
}
SR = [4, 2, 2, 1]
PATCH = [4, 2, 2, 2]
STRIDES = [4, 8, 16, 32]
BN_BUFFERS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def official_keys(variant, num_classes=1000):
    """Official state-dict keys -> shapes, derived from the documented structure of src/edgevit.py."""
    a = OFFICIAL_ARCH[variant]
    keys = {}

    def conv(name, cout, cin_g, k):
        keys[f"{name}.weight"] = (cout, cin_g, k, k)
        keys[f"{name}.bias"] = (cout,)

    def lin(name, cout, cin):
        keys[f"{name}.weight"] = (cout, cin)
        keys[f"{name}.bias"] = (cout,)

    def ln(name, c):
        keys[f"{name}.weight"] = (c,)
        keys[f"{name}.bias"] = (c,)

    def bn(name, c):
        for b in BN_BUFFERS:
            keys[f"{name}.{b}"] = () if b == "num_batches_tracked" else (c,)

    cin = 3
    for i, (c, d) in enumerate(zip(a["dims"], a["depths"])):
        conv(f"patch_embed{i + 1}.proj", c, cin, PATCH[i])
        ln(f"patch_embed{i + 1}.norm", c)
        for k in range(d):
            p = f"blocks{i + 1}.{k}"
            if SR[i] > 1:
                conv(f"{p}.LocalAgg.pos_embed", c, 1, 3)
                bn(f"{p}.LocalAgg.norm1", c)
                conv(f"{p}.LocalAgg.conv1", c, c, 1)
                conv(f"{p}.LocalAgg.attn", c, 1, 5)
                conv(f"{p}.LocalAgg.conv2", c, c, 1)
                bn(f"{p}.LocalAgg.norm2", c)
                conv(f"{p}.LocalAgg.mlp.fc1", 4 * c, c, 1)
                conv(f"{p}.LocalAgg.mlp.fc2", c, 4 * c, 1)
            conv(f"{p}.SelfAttn.pos_embed", c, 1, 3)
            ln(f"{p}.SelfAttn.norm1", c)
            lin(f"{p}.SelfAttn.attn.qkv", 3 * c, c)
            lin(f"{p}.SelfAttn.attn.proj", c, c)
            if SR[i] > 1:
                conv(f"{p}.SelfAttn.attn.LocalProp", c, 1, SR[i])  # ConvTranspose2d weight (in, out/groups, k, k)
                ln(f"{p}.SelfAttn.attn.norm", c)
            ln(f"{p}.SelfAttn.norm2", c)
            lin(f"{p}.SelfAttn.mlp.fc1", 4 * c, c)
            lin(f"{p}.SelfAttn.mlp.fc2", c, 4 * c)
        cin = c
    bn("norm", a["dims"][-1])
    lin("head", num_classes, a["dims"][-1])
    return keys


# ---------------------------------------------------------------------------------------------------------------
# Independent reference: the official computation re-derived with plain torch ops from an official-layout dict.
# Only valid for H, W multiples of 32 (as the official code).
# ---------------------------------------------------------------------------------------------------------------
def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        training=False, eps=1e-5)


def _ln(x, sd, p, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], eps=eps)


def _conv(x, sd, p, stride=1, padding=0, groups=1):
    return F.conv2d(x, sd[f"{p}.weight"], sd[f"{p}.bias"], stride=stride, padding=padding, groups=groups)


def _lin(x, sd, p):
    return x @ sd[f"{p}.weight"].t() + sd[f"{p}.bias"]


def ref_local_agg(x, sd, p):
    c = x.shape[1]
    x = x + _conv(x, sd, f"{p}.pos_embed", padding=1, groups=c)
    y = _conv(_bn(x, sd, f"{p}.norm1"), sd, f"{p}.conv1")
    y = _conv(y, sd, f"{p}.attn", padding=2, groups=c)
    x = x + _conv(y, sd, f"{p}.conv2")
    y = _conv(F.gelu(_conv(_bn(x, sd, f"{p}.norm2"), sd, f"{p}.mlp.fc1")), sd, f"{p}.mlp.fc2")
    return x + y


def ref_sparse_attn(t, sd, p, H, W, heads, sr):
    """Official GlobalSparseAttn on normalised tokens t (B, H*W, C)."""
    B, N, C = t.shape
    if sr > 1:
        m = t.transpose(1, 2).reshape(B, C, H, W)
        m = F.avg_pool2d(m, kernel_size=1, stride=sr)
        t = m.flatten(2).transpose(1, 2)
    qkv = _lin(t, sd, f"{p}.qkv").reshape(B, -1, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = torch.softmax((q @ k.transpose(-2, -1)) * (C // heads) ** -0.5, dim=-1)
    t = (attn @ v).transpose(1, 2).reshape(B, -1, C)
    if sr > 1:
        m = t.permute(0, 2, 1).reshape(B, C, H // sr, W // sr)
        m = F.conv_transpose2d(m, sd[f"{p}.LocalProp.weight"], sd[f"{p}.LocalProp.bias"], stride=sr, groups=C)
        t = _ln(m.reshape(B, C, -1).permute(0, 2, 1), sd, f"{p}.norm", 1e-5)
    return _lin(t, sd, f"{p}.proj")


def ref_self_attn(x, sd, p, heads, sr):
    B, C, H, W = x.shape
    x = x + _conv(x, sd, f"{p}.pos_embed", padding=1, groups=C)
    t = x.flatten(2).transpose(1, 2)
    t = t + ref_sparse_attn(_ln(t, sd, f"{p}.norm1", 1e-6), sd, f"{p}.attn", H, W, heads, sr)
    t = t + _lin(F.gelu(_lin(_ln(t, sd, f"{p}.norm2", 1e-6), sd, f"{p}.mlp.fc1")), sd, f"{p}.mlp.fc2")
    return t.transpose(1, 2).reshape(B, C, H, W)


def ref_forward(sd, x, variant):
    a = OFFICIAL_ARCH[variant]
    feats = []
    for i, (c, d) in enumerate(zip(a["dims"], a["depths"])):
        x = _conv(x, sd, f"patch_embed{i + 1}.proj", stride=PATCH[i])
        B, C, H, W = x.shape
        x = _ln(x.flatten(2).transpose(1, 2), sd, f"patch_embed{i + 1}.norm", 1e-5)
        x = x.reshape(B, H, W, C).permute(0, 3, 1, 2)
        for k in range(d):
            if SR[i] > 1:
                x = ref_local_agg(x, sd, f"blocks{i + 1}.{k}.LocalAgg")
            x = ref_self_attn(x, sd, f"blocks{i + 1}.{k}.SelfAttn", a["heads"][i], SR[i])
        feats.append(x)
    logits = _lin(_bn(x, sd, "norm").flatten(2).mean(-1), sd, "head")
    return feats, logits


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_params_and_macs_match_official(variant, complexity, on_meta):
    complexity(on_meta(EdgeViTClassifier, variant), OFFICIAL_PARAMS[variant], OFFICIAL_MACS_224[variant])


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_key_layout(variant, to_official, on_meta):
    model = on_meta(EdgeViTClassifier, variant)
    official = to_official(model)
    ours = {k: tuple(v.shape) for k, v in official.items()}
    expected = official_keys(variant)
    assert sorted(ours) == sorted(expected)
    assert ours == expected
    # head dims per the official head_dim rule: dim // head_dim heads
    heads = [blk.SelfAttn.attn.num_heads for i in range(4) for blk in getattr(model.backbone, f"blocks{i + 1}")[:1]]
    assert heads == OFFICIAL_ARCH[variant]["heads"]
    assert all(any(s in k for k in expected) for s in OFFICIAL_KEY_SIGNATURE)
    assert model.backbone.stage_channels == OFFICIAL_ARCH[variant]["dims"] and model.backbone.stage_strides == STRIDES


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_checkpoint_round_trip(variant, randomized, to_official):
    src = randomized(EdgeViTClassifier(variant), seed=1).eval()
    official = {k: v.clone() for k, v in to_official(src).items()}
    converted = convert_official_checkpoint(official)
    dst = EdgeViTClassifier(variant).eval()
    res = dst.load_state_dict(converted, strict=False)
    assert res.missing_keys == [] and res.unexpected_keys == []
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    # converting an already converted dict is a no-op
    assert convert_official_checkpoint(converted).keys() == converted.keys()


@pytest.mark.parametrize("variant,size", [("xxs", (224, 224)), ("xs", (64, 96)), ("s", (96, 64))])
def test_matches_independent_official_reference(variant, size, randomized, to_official, on_meta):
    # float64: randomised weights make activations large, and softmax would amplify float32 rounding.
    model = randomized(on_meta(EdgeViTClassifier, variant), seed=2).double().eval()
    backbone = model.backbone
    backbone.out_indices = (0, 1, 2, 3)
    sd = to_official(model)
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref_feats, ref_logits = ref_forward(sd, x, variant)
        feats = backbone(x)
        logits = model.head(feats)
    assert len(feats) == 4
    for f, r in zip(feats, ref_feats):
        torch.testing.assert_close(f, r, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-9, atol=1e-9)


def test_single_blocks_match_reference(randomized):
    """LocalAgg and SelfAttn (sr 4 and 1) in isolation against the plain-op reference."""
    model = randomized(EdgeViTBackbone("xxs"), seed=3).eval()
    sd = model.state_dict()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 36, 16, 24, generator=g)
    blk = model.blocks1[0]
    with torch.no_grad():
        torch.testing.assert_close(blk.LocalAgg(x), ref_local_agg(x, sd, "blocks1.0.LocalAgg"), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(blk.SelfAttn(x), ref_self_attn(x, sd, "blocks1.0.SelfAttn", 1, 4),
                                   rtol=1e-5, atol=1e-5)
        y = torch.randn(2, 288, 3, 5, generator=g)
        torch.testing.assert_close(model.blocks4[1](y), ref_self_attn(y, sd, "blocks4.1.SelfAttn", 8, 1),
                                   rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# sizes the official code rejects (it needs multiples of 32): bottom/right zero padding, cropped LocalProp
# ---------------------------------------------------------------------------------------------------------------
def test_non_divisible_backward():
    b = EdgeViTBackbone("xxs", out_indices=(1, 3)).train()
    feats = b(torch.randn(2, 3, 70, 50))
    assert [tuple(f.shape) for f in feats] == [(2, 72, 9, 7), (2, 288, 3, 2)]
    sum(f.mean() for f in feats).backward()
    assert all(p.grad is not None for p in b.parameters())


def test_padding_rule_is_bottom_right_zero_pad(randomized):
    """A non-multiple input gives the same stage-1 patch values as the explicitly zero-padded input."""
    b = randomized(EdgeViTBackbone("xxs", out_indices=(0,)), seed=4).eval()
    x = torch.randn(1, 3, 62, 90)
    with torch.no_grad():
        a = b.patch_embed1(x)
        p = b.patch_embed1(F.pad(x, (0, 2, 0, 2)))
    torch.testing.assert_close(a, p)
