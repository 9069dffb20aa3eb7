"""EfficientViT-MSRA core (effvit_plugins.models.efficientvit_msra, M0-M5): what is specific to this family.

Oracle for the official names and values: **timm's own** official -> timm conversion. timm 1.0.31 keeps it only
as a commented-out ``checkpoint_filter_fn`` in ``timm/models/efficientvit_msra.py`` (its live filter of that name
only drops index buffers and resizes bias tables of timm-format weights). :func:`timm_official_filter` reads that
block from the installed timm source file (``inspect.getsource`` of the module), removes the leading ``#`` of each
line and executes it: timm's code, run as written, nothing of it copied into this repository. This is sound
because the block is self-contained (it uses only its two arguments), and nothing in it depends on our code:
it renames ``.c.``/``.l.`` and ``patch_embed.{0,2,4,6}`` and assigns every ``blocks*`` tensor to timm's key with
the same suffix at the same position (official keys sorted as strings, timm keys in model order), i.e. it
accepts exactly the official layout. (The string sort is right for block indices below 10, true for M0-M5.) If
a timm upgrade drops the block, the test fails and says so (timm is pinned in requirements.txt).

Our classifier is randomised (weights, BN statistics, attention-bias tables), written in the official layout,
converted by that filter, passed through timm's live filter (what ``timm.create_model(pretrained=True)`` applies)
and loaded strictly into timm; the logits must agree. The bias tables are not touched in the test.

The shared backbone behaviour is tested for every family in test_backbone_contract.py.
"""
import inspect
import re

import pytest
import torch
import torch.nn as nn

import timm
import timm.models.efficientvit_msra as timm_msra

from effvit_plugins.checkpoint import unwrap_state_dict
from effvit_plugins.models.efficientvit_msra import (ARCH_SETTINGS, OFFICIAL_KEY_SIGNATURE, EfficientViTMSRABackbone,
                                                     EfficientViTMSRAClassifier, convert_official_checkpoint)
from effvit_plugins.utils.complexity import count_params

VARIANTS = list(ARCH_SETTINGS)

# README (microsoft/Cream EfficientViT/classification/README.md; arXiv 2305.07027): Params 2.3 / 3.0 / 4.2 / 6.9 / 8.8 /
# 12.4M, FLOPs 79 / 167 / 201 / 263 / 299 / 522M, asserted within their rounding (0.05M; FLOPs, which are MACs here:
# 0.5M). The model as trained has 12.47M parameters for M5 (our measurement of the official code; timm's count, exact
# below), which rounds to 12.5M, not 12.4M; all six README figures agree with the count of the inference model with BN
# folded (every conv+BN a conv with bias, the BN+Linear head a Linear), so that is the count compared with them. (Our
# reading: the repository does not say how it counted.)
README_PARAMS = {"m0": "2.3M", "m1": "3.0M", "m2": "4.2M", "m3": "6.9M", "m4": "8.8M", "m5": "12.4M"}
README_MACS = {"m0": "79M", "m1": "167M", "m2": "201M", "m3": "263M", "m4": "299M", "m5": "522M"}


def timm_official_filter():
    """timm's commented-out official -> timm ``checkpoint_filter_fn``, executed from timm's installed source."""
    source = inspect.getsource(timm_msra)
    blocks = re.findall(r"^# def checkpoint_filter_fn\(state_dict, model\):\n(?:#.*\n)+", source, flags=re.M)
    assert len(blocks) == 1, (f"timm {timm.__version__}: the commented-out official -> timm checkpoint_filter_fn is "
                              f"no longer in {timm_msra.__file__}; pin timm==1.0.31 (requirements.txt)")
    code = "\n".join(line[2:] if line.startswith("# ") else line[1:] for line in blocks[0].splitlines())
    namespace = {}
    exec(compile(code, f"{timm_msra.__file__} (commented-out checkpoint_filter_fn)", "exec"), namespace)
    return namespace["checkpoint_filter_fn"]


def official_into_timm(official, timm_from, **timm_kwargs):
    """An official-layout state dict converted and loaded the way timm would: its official -> timm filter, then its
    live filter for the target size, then a strict load."""
    name = f"efficientvit_{timm_kwargs.pop('arch')}"
    with torch.device("meta"):
        target = timm.create_model(name, **timm_kwargs)
    sd = timm_official_filter()({"model": official}, target)
    return timm_from(name, timm_msra.checkpoint_filter_fn(sd, target), **timm_kwargs)


def bn_folded_params(model: nn.Module) -> int:
    """Parameters once every BN is folded into the preceding conv / following linear layer (inference model)."""
    n = count_params(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # conv (no bias) + BN (weight, bias) -> conv + bias
            n -= m.num_features
        elif isinstance(m, nn.BatchNorm1d):  # BN (weight, bias) + Linear (with bias) -> Linear
            n -= 2 * m.num_features
    return n


@pytest.mark.parametrize("variant", VARIANTS)
def test_params_and_macs(variant, complexity):
    with torch.device("meta"):
        ours = EfficientViTMSRAClassifier(variant)
    complexity(ours, README_PARAMS[variant], README_MACS[variant], timm_name=f"efficientvit_{variant}",
               published_count=bn_folded_params)


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_names_through_timms_filter(variant, randomized, to_official, timm_from, logits_agree):
    ours = randomized(EfficientViTMSRAClassifier(variant), seed=1)
    official = to_official(ours)
    assert all(any(s in k for k in official) for s in OFFICIAL_KEY_SIGNATURE)
    ref = official_into_timm(official, timm_from, arch=variant)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))  # fixed 224 in timm
    logits_agree(ours, ref, x, atol=1e-4)


def test_dense_backbone_matches_timm_at_512(randomized, to_official, timm_from):
    """The dense backbone (7x7 windows everywhere; window partition + padding) equals timm built for 512."""
    cls = randomized(EfficientViTMSRAClassifier("m1", img_size=512), seed=3)
    ref = official_into_timm(to_official(cls), timm_from,
                             arch="m1", img_size=512)
    bb = EfficientViTMSRABackbone("m1").eval()
    assert bb.window_sizes == cls.backbone.window_sizes == [7, 7, 7]
    bb.load_state_dict(cls.backbone.state_dict(), strict=True)
    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, outs = ref.forward_intermediates(x, intermediates_only=True), bb(x)
    for r, o in zip(expected, outs):
        assert r.shape == o.shape
        assert (r - o).abs().max().item() < 1e-4


@pytest.mark.parametrize("variant", ["m0", "m1", "m2"])
def test_official_checkpoint_quirks_convert(variant, randomized, to_official):
    """Official files: 1x1 conv weights stored 2-D (all), DataParallel ``module.`` prefix (m1), no index buffers
    (m2, e.g. after a round trip through timm): converted, they load strictly and give the same outputs."""
    src = randomized(EfficientViTMSRAClassifier(variant), seed=4).eval()
    official = {k: (v.flatten(1) if v.dim() == 4 and v.shape[-2:] == (1, 1) and "se." not in k else v)
                for k, v in to_official(src).items()}
    assert any(v.dim() == 2 for k, v in official.items() if k.endswith("qkvs.0.c.weight"))
    if variant == "m2":
        official = {k: v for k, v in official.items() if not k.endswith("attention_bias_idxs")}
    ckpt = {"model": {("module." if variant == "m1" else "") + k: v for k, v in official.items()}, "epoch": 299}
    dst = EfficientViTMSRAClassifier(variant).eval()
    dst.load_state_dict(convert_official_checkpoint(unwrap_state_dict(ckpt)), strict=True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_imagenet_checkpoint_into_dense_backbone(randomized, to_official):
    """ImageNet tables (stage 3: 4x4 window) load into the 7x7-window backbone; idxs regenerated."""
    cls = randomized(EfficientViTMSRAClassifier("m0"))
    sd = convert_official_checkpoint(to_official(cls))
    bsd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    bb = EfficientViTMSRABackbone("m0")
    assert bb.window_sizes == [7, 7, 7]
    assert bsd["blocks3.3.mixer.m.attn.attention_biases"].shape == (4, 16)
    bb.load_state_dict(bsd, strict=True)
    attn = bb.blocks3[3].mixer.m.attn
    assert attn.attention_biases.shape == (4, 49) and attn.attention_bias_idxs.shape == (49, 49)
    # unchanged stage-1 table
    assert torch.equal(bb.blocks1[0].mixer.m.attn.attention_biases, bsd["blocks1.0.mixer.m.attn.attention_biases"])
    with torch.no_grad():
        outs = bb.eval()(torch.randn(1, 3, 224, 224))
    assert [o.shape[-1] for o in outs] == [14, 7, 4]


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


def test_widths_and_strides():
    for variant in VARIANTS:
        with torch.device("meta"):
            bb = EfficientViTMSRABackbone(variant)
        assert bb.stage_channels == list(ARCH_SETTINGS[variant]["embed_dims"]) and bb.stage_strides == [16, 32, 64]


@pytest.mark.parametrize("size", [(224, 224), (96, 640)])
def test_sizes_the_official_dense_code_rejects(size):
    """224 gives a 4x4 stride-64 map (the official downstream code fails there); 96x640 mixes a map smaller than
    the window in one dimension with several windows in the other."""
    bb = EfficientViTMSRABackbone("m0").eval()
    h, w = size
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, h, w))
    expected = [(1, c, -(-h // s), -(-w // s)) for c, s in zip(bb.out_channels, (16, 32, 64))]
    assert [tuple(o.shape) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


def test_classifier_other_sizes_and_small_maps():
    cls = EfficientViTMSRAClassifier("m0").eval()
    assert cls.backbone.window_sizes == [7, 7, 4]
    with torch.no_grad():
        for size in [(160, 160), (512, 512), (96, 320)]:
            assert cls(torch.randn(1, 3, *size)).shape == (1, 1000)


def test_eval_bias_cache_follows_updates(randomized):
    bb = randomized(EfficientViTMSRABackbone("m0")).eval()
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
