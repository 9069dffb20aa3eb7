"""Shared building blocks (``effvit_plugins.models.layers``) that no family test covers on their own."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from effvit_plugins.deploy.rewrites import (exporting_fixed_size, graph_rewrites, upsample_by_conv,
                                            upsample_phase_kernel)
from effvit_plugins.models.layers import (SMALL_MAP_PIXELS, ConvNormAct, GroupNorm, is_channels_last,
                                          pointwise_as_gemm, upsample)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_upsample_by_conv_equals_interpolate(mode, factor):
    """The polyphase convolution written into fixed-size ONNX graphs is F.interpolate (align_corners=False),
    borders included, on maps as small as 1x1 and with odd sides."""
    g = torch.Generator().manual_seed(factor)
    for h, w in [(1, 1), (2, 3), (7, 5), (16, 32)]:
        x = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64)
        ref = F.interpolate(x, size=(h * factor, w * factor), mode=mode, align_corners=False)
        out = upsample_by_conv(x, factor, mode)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_phase_kernel_rows_sum_to_one_and_bad_mode():
    for mode in ("bicubic", "bilinear"):
        rows, pad = upsample_phase_kernel(4, mode)
        assert len(rows) == 4 and all(len(r) == 2 * pad + 1 for r in rows)
        assert all(abs(sum(r) - 1.0) < 1e-12 for r in rows)
    with pytest.raises(ValueError, match="'bicubic' or 'bilinear'.*'nearest'"):
        upsample_phase_kernel(2, "nearest")


def test_fixed_size_export_only_inside_an_onnx_export(tmp_path):
    """``upsample`` / ``GroupNorm`` are the eager ops outside an export (also inside the context); the context nests
    and restores."""
    x = torch.randn(1, 2, 4, 6)
    norm = GroupNorm(1, 2)
    with graph_rewrites(fixed_size=True):
        assert not exporting_fixed_size()  # not exporting: eager keeps PyTorch's own kernel
        with graph_rewrites(fixed_size=False):
            pass
        torch.testing.assert_close(upsample(x, (8, 12)), F.interpolate(x, size=(8, 12), mode="bicubic"))
        torch.testing.assert_close(norm(x), F.group_norm(x, 1, norm.weight, norm.bias))
    assert not exporting_fixed_size()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("with_norm", [True, False], ids=["conv_bn", "conv"])
def test_weight_bound_pointwise_conv_runs_as_one_gemm(channels_last, batch, with_norm, monkeypatch):
    """At inference a 1x1 conv whose weights outweigh its maps is a matrix product (oneDNN's conv was up to 3x slower
    there): same values as the convolution, same memory layout; a large map keeps the convolution."""
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 384, 1, bias=not with_norm)
    norm = nn.BatchNorm2d(384) if with_norm else None
    if norm is not None:
        norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2), norm.weight.data.uniform_(0.5, 2)
    unit = ConvNormAct(conv, norm, nn.ReLU()).eval()
    x = torch.randn(batch, 256, 3, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = unit.act(norm(conv(x)) if norm is not None else conv(x))  # the training graph's ops
    calls = []
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", lambda self, *a: calls.append(a) or F.conv2d(a[0], *a[1:]))
    with torch.inference_mode():
        out = unit(x)
        assert not calls, "the weight-bound 1x1 conv still went through the convolution"
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        assert is_channels_last(out) == channels_last and out.shape == (batch, 384, 3, 5)
        unit(torch.randn(batch, 256, 80, 80))  # a large map that outweighs the weights: convolution
        assert len(calls) == 1


def test_which_pointwise_convs_run_as_gemm():
    """Weight-bound 1x1 convs in both layouts; on NCHW also every map up to SMALL_MAP_PIXELS; nothing else."""
    def decide(cin, cout, n, h, w, channels_last=False, **conv_kw):
        x = torch.randn(n, cin, h, w)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return pointwise_as_gemm(nn.Conv2d(cin, cout, conv_kw.pop("k", 1), **conv_kw), x)

    assert decide(512, 1024, 1, 7, 7) and decide(512, 1024, 1, 7, 7, channels_last=True)  # weight-bound
    assert decide(32, 64, 4, 7, 7) and not decide(32, 64, 4, 7, 7, channels_last=True)  # small NCHW map
    assert SMALL_MAP_PIXELS == 64 * 64 and decide(64, 128, 1, 64, 64) and not decide(64, 128, 1, 65, 64)
    assert not decide(64, 128, 1, 80, 80, channels_last=True)
    assert not decide(64, 128, 1, 7, 7, k=3, padding=1) and not decide(64, 128, 1, 7, 7, stride=2)
    assert not decide(64, 128, 1, 7, 7, groups=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not decide(512, 1024, 1, 7, 7)


def test_groupnorm_exports_with_per_channel_reductions(tmp_path):
    """EfficientFormer-L1's stride-4 output GroupNorm at 512x512: exported as nn.GroupNorm (one
    InstanceNormalization over 786k values) onnxruntime (pinned 1.31.1) misses the 1e-4 check; our GroupNorm, the
    same module in eager mode, reduces per channel first and passes with margin."""
    from effvit_plugins.models.efficientformer_v1 import EfficientFormerV1Backbone
    from effvit_plugins.deploy import ExportError, export_onnx

    torch.manual_seed(0)
    model = EfficientFormerV1Backbone("l1", out_indices=(0,)).eval()
    assert type(model.norm0) is GroupNorm and isinstance(model.norm0, nn.GroupNorm)
    x = torch.randn(2, 48, 9, 11)
    plain = nn.GroupNorm(1, 48)
    plain.load_state_dict(model.norm0.state_dict())
    with torch.no_grad():
        model.norm0.weight.uniform_(0.5, 2), model.norm0.bias.uniform_(-1, 1)
        plain.load_state_dict(model.norm0.state_dict())
        assert torch.equal(model.norm0(x), plain(x))  # eager: nn.GroupNorm itself
    report = export_onnx(model, str(tmp_path / "ours.onnx"), (512, 512))
    assert report.max_rel_error < 1e-5 and "InstanceNormalization" not in report.op_counts
    model.norm0 = plain
    with pytest.raises(ExportError, match="max relative error"):
        export_onnx(model, str(tmp_path / "plain.onnx"), (512, 512))
