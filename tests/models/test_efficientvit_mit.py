"""EfficientViT-MIT core (effvit_plugins.models.efficientvit_mit, B0-B3 / L0-L3): what is specific to this family.

Oracle for the official names and values: timm's EfficientViT (MIT) models, reached through **our hand-written key
map** :func:`official_to_timm` (timm 1.0.31 has no official -> timm filter for this family: its weights are
re-hosted in timm's layout). The map is the name correspondence of mit-han-lab/efficientvit
efficientvit/models/efficientvit/{backbone,cls}.py and timm/models/efficientvit_mit.py (measured on the official
and timm state dicts: same tensors, same order); it only renames keys. Our classifier is randomised (weights, BN
statistics), written in the official layout (our names are the official ones, unchanged), mapped and loaded
strictly into timm; the logits must agree. timm's linear attention uses eps 1e-5 where the official code uses
1e-15 (LiteMLA in the official efficientvit/models/nn/ops.py): the timm modules are given the official value.

Also here: the fp16/bf16 autocast guard of the linear attention. The shared backbone behaviour is tested for
every family in test_backbone_contract.py.
"""
import re

import pytest
import torch

from timm.models.efficientvit_mit import LiteMLA as TimmLiteMLA

from effvit_plugins.models.efficientvit_mit import (ARCH_SETTINGS, EfficientViTMITBackbone,
                                                    EfficientViTMITClassifier, GroupedPointwiseConv, LiteMLA)

CLASSIFIERS = [a for a, s in ARCH_SETTINGS.items() if s["head_widths"] is not None]  # L0 has no ImageNet model

# Parameters of the ImageNet models as published (mit-han-lab/efficientvit applications/efficientvit_cls/README.md; B0
# is not in the README: its 3.4M is our measurement of the official code, rounded alike), asserted within their
# rounding; the exact count is timm's. MACs at 224: our measurement of the official code
# (efficientvit/models/efficientvit/cls.py; the README's rounded 0.52 / 1.6 / 4.0 / 5.3 / 6.9 / 28G agree).
README_PARAMS = {"b0": "3.4M", "b1": "9.1M", "b2": "24M", "b3": "49M", "l1": "53M", "l2": "64M", "l3": "246M"}
OFFICIAL_MACS_224 = {"b0": "0.100G", "b1": "0.519G", "b2": "1.585G", "b3": "3.954G", "l1": "5.258G", "l2": "6.950G",
                     "l3": "27.59G"}
# Stage widths, stem (stride 2) to stride 32 (efficientvit_backbone_b0..b3 / _l0..l3 in the official
# efficientvit/models/efficientvit/backbone.py)
WIDTHS = {"b0": [8, 16, 32, 64, 128], "b1": [16, 32, 64, 128, 256], "b2": [24, 48, 96, 192, 384],
          "b3": [32, 64, 128, 256, 512], "l0": [32, 64, 128, 256, 512], "l1": [32, 64, 128, 256, 512],
          "l2": [32, 64, 128, 256, 512], "l3": [64, 128, 256, 512, 1024]}
OFFICIAL_ATTN_EPS = 1e-15

# official -> timm (official efficientvit/models/efficientvit/backbone.py -> timm/models/efficientvit_mit.py); B: the
# stem is backbone.input_stem and stages 0..3 keep their index; L: the stem is backbone.stages.0 and stages 1..4 become
# timm's 0..3.
_HEAD = [(r"^head\.op_list\.0\.", "head.in_conv."), (r"^head\.op_list\.2\.linear\.", "head.classifier.0."),
         (r"^head\.op_list\.2\.norm\.", "head.classifier.1."), (r"^head\.op_list\.3\.linear\.", "head.classifier.4.")]


def official_to_timm(state_dict, series: str):
    stem = r"^backbone\.input_stem\." if series == "b" else r"^backbone\.stages\.0\."
    offset = 0 if series == "b" else 1
    rules = _HEAD + [
        (stem + r"op_list\.0\.", "stem.in_conv."),
        (stem + r"op_list\.(\d+)\.", lambda m: f"stem.res{int(m[1]) - 1}."),
        (r"^backbone\.stages\.(\d+)\.op_list\.(\d+)\.", lambda m: f"stages.{int(m[1]) - offset}.blocks.{m[2]}."),
    ]
    out = {}
    for k, v in state_dict.items():
        for pattern, repl in rules:
            k, n = re.subn(pattern, repl, k)
            if n:
                break
        out[k] = v
    return out


@pytest.mark.parametrize("arch", CLASSIFIERS)
def test_params_and_macs(arch, complexity, on_meta):
    complexity(on_meta(EfficientViTMITClassifier, arch), README_PARAMS[arch], OFFICIAL_MACS_224[arch],
               timm_name=f"efficientvit_{arch}")


def test_widths_and_strides(on_meta):
    for arch, widths in WIDTHS.items():
        bb = on_meta(EfficientViTMITBackbone, arch)
        assert bb.stage_channels == widths and bb.stage_strides == [2, 4, 8, 16, 32]


@pytest.mark.parametrize("arch", CLASSIFIERS)
def test_official_names_through_key_map_into_timm(arch, randomized, to_official, timm_from, logits_agree, on_meta):
    """224 x 224 (linear attention on >= 7x7 maps); L3 at 128 x 128 (cheaper), where our attention takes the
    quadratic form on its 4x4 stride-32 map (16 tokens <= head dim 32) and timm the linear one: same result."""
    ours = randomized(on_meta(EfficientViTMITClassifier, arch), seed=1)
    official = to_official(ours)
    ref = timm_from(f"efficientvit_{arch}", official_to_timm(official, ARCH_SETTINGS[arch]["series"]))
    attn = [m for m in ref.modules() if isinstance(m, TimmLiteMLA)]
    assert len(attn) == sum(isinstance(m, LiteMLA) for m in ours.modules()) > 0
    for m in attn:
        m.eps = OFFICIAL_ATTN_EPS
    big = arch == "l3"
    x = torch.randn(1 if big else 2, 3, *((128, 128) if big else (224, 224)),
                    generator=torch.Generator().manual_seed(2))
    logits_agree(ours, ref, x, atol=1e-4, inference_path=not big)


def test_l_series_uses_official_eps(on_meta):
    b = on_meta(EfficientViTMITBackbone, "b1")
    l = on_meta(EfficientViTMITBackbone, "l1")
    assert {m.eps for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}
    assert {m.eps for m in l.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-7}
    assert {m.eps for m in l.modules() if isinstance(m, LiteMLA)} == {OFFICIAL_ATTN_EPS}


# ------------------------------------------------------------------------------------------------------------
# mixed precision: the attention arithmetic runs in float32 with autocast off (official fix, issues #15 / #110)
# ------------------------------------------------------------------------------------------------------------
def _attention_and_input(weight_gain: float, input_gain: float):
    torch.manual_seed(0)
    att = LiteMLA(64, 64, dim=16).eval()
    with torch.no_grad():
        att.qkv.conv.weight.mul_(weight_gain)
    return att, torch.randn(1, 64, 32, 32) * input_gain


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "autograd"])
def test_linear_attention_fp16_autocast(grad, channels_last):
    """Under float16 autocast the result is within a few float16 roundings of the float32 one: only the 1x1 convs
    around the attention run in float16. Without the guard the (v | 1) k^T q products of 1024 tokens overflow
    float16 and the 1e-15 eps of the normaliser underflows to 0: the output is NaN (checked by removing it).
    Both layouts: a channels-last map takes the token-layout path."""
    att, x = _attention_and_input(20.0, 3.0)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.set_grad_enabled(grad):
        ref = att(x).detach()
        with torch.autocast("cpu", dtype=torch.float16):
            out = att(x).detach()
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    err = (out.float() - ref).abs().max().item()
    assert err <= 2e-3 * ref.abs().max().item(), err  # float16 unit roundoff: 4.9e-4


@pytest.mark.parametrize("hw", [(13, 11), (4, 4)], ids=["linear", "quadratic"])
def test_token_layout_attention_equals_the_plain_path(hw):
    """A channels-last qkv map is attended on its token view (no layout copies): same values and gradients as the
    NCHW path, a channels-last result, under autograd and without it; maps of <= dim tokens keep the quadratic
    form in both layouts."""
    torch.manual_seed(0)
    att = LiteMLA(64, 64, dim=16).eval()
    qkv = torch.randn(2, 2 * 3 * 64, *hw) * 2.0
    grad_out = torch.randn(2, 2 * 64, *hw)
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        inp = qkv.clone(memory_format=layout).requires_grad_()
        out = att._attention(inp)
        out.backward(grad_out)
        with torch.no_grad():
            fast = att._attention(inp.detach())
        results.append((out.detach(), inp.grad, fast))
    (ref, ref_grad, ref_fast), (out, grad, fast) = results
    linear = hw[0] * hw[1] > att.dim
    assert (fast.is_contiguous(memory_format=torch.channels_last) and not fast.is_contiguous()) == linear
    assert torch.allclose(ref, ref_fast, rtol=1e-5, atol=1e-6 * ref.abs().max().item())
    for a, b in ((out, ref), (fast, ref), (grad, ref_grad)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * b.abs().max().item())


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_grouped_pointwise_conv_as_batched_matmul_equals_the_conv(layout):
    """The aggregation's grouped 1x1 conv computed as one bmm: the conv's values and gradients, the input's layout
    kept, and a plain grouped Conv while tracing (what ONNX gets)."""
    torch.manual_seed(0)
    m = GroupedPointwiseConv(48, groups=6)
    x = torch.randn(2, 48, 5, 7).contiguous(memory_format=layout).requires_grad_()
    out, ref = m(x), torch.nn.functional.conv2d(x, m.weight, groups=6)
    g = torch.randn_like(ref)
    grads = [torch.autograd.grad(y, (x, m.weight), g) for y in (out, ref)]
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(*grads))
    assert out.is_contiguous(memory_format=layout)
    graph = torch.jit.trace(m, x.detach()).graph
    assert "aten::_convolution" in str(graph) and "aten::bmm" not in str(graph)


def test_linear_attention_fp32_under_bf16_autocast():
    """Values whose products lose precision in bf16 still give finite, fp32-accurate outputs under bf16 autocast.
    (bf16 has float32's range, and the CPU bf16 matmul accumulates in float32: here removing the guard costs
    little precision, so the fp16 test above is the one that fails without it.)"""
    att, x = _attention_and_input(400.0, 10.0)  # q/k/v of order 1e3-1e4
    with torch.no_grad():
        ref = att(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = att(x)
    assert torch.isfinite(out).all()
    # the attention itself ran in fp32; only the 1x1 convs around it are bf16
    assert torch.allclose(out.float(), ref, rtol=5e-2, atol=5e-2 * ref.abs().max().item())


def test_inference_fast_path_equals_training_graph(randomized):
    """BN folding, in-place activations and channels-last (used without autograd) change nothing but rounding;
    an in-place change of a BN statistic invalidates the folded weights."""
    m = randomized(EfficientViTMITBackbone("b1", out_indices=(1, 2, 3, 4))).eval()
    x = torch.randn(1, 3, 96, 160)
    ref = m(x)  # autograd enabled: plain conv -> BN -> act graph
    with torch.no_grad():
        fast = m(x)
        m.stages[0].op_list[0].main.inverted_conv.norm.running_mean.add_(1.0)  # in-place change invalidates cache
        changed = m(x)
    for a, b in zip(ref, fast):
        assert a.is_contiguous() and b.is_contiguous()
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(changed[1], fast[1], atol=1e-3)
    m2 = EfficientViTMITBackbone("b1", out_indices=(1, 2, 3, 4), channels_last=False).eval()
    m2.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(m2(x), changed))
