"""EfficientViT (MIT) core: structure vs the official figures, timm parity, options, autocast safety."""
import re

import pytest
import torch

from effvit_plugins.models.efficientvit_mit import (
    ARCH_SETTINGS, EfficientViTMITBackbone, EfficientViTMITClassifier, LiteMLA, convert_official_checkpoint)
from effvit_plugins.utils.complexity import count_macs, count_params

import timm  # noqa: E402

# (params M, MACs G) of the official ImageNet models at 224 (architectures.md §1.4).
CLS_TARGETS = {"b0": (3.41, 0.100), "b1": (9.10, 0.519), "b2": (24.33, 1.585), "b3": (48.65, 3.954),
               "l1": (52.65, 5.258), "l2": (63.71, 6.950), "l3": (246.04, 27.59)}


@pytest.mark.parametrize("arch", sorted(CLS_TARGETS))
def test_params_and_macs_match_official(arch):
    with torch.device("meta"):
        model = EfficientViTMITClassifier(arch)
    params, macs = count_params(model) / 1e6, count_macs(model, (1, 3, 224, 224)) / 1e9
    p_ref, m_ref = CLS_TARGETS[arch]
    assert abs(params - p_ref) / p_ref < 0.01, (params, p_ref)
    assert abs(macs - m_ref) / m_ref < 0.02, (macs, m_ref)


def timm_to_ours(key: str, series: str) -> str:
    """Key map timm -> ours (= official names)."""
    if key.startswith("head."):
        key = key.replace("head.in_conv.", "head.op_list.0.")
        key = key.replace("head.classifier.0.", "head.op_list.2.linear.")
        key = key.replace("head.classifier.1.", "head.op_list.2.norm.")
        key = key.replace("head.classifier.4.", "head.op_list.3.linear.")
        return key
    stem = "input_stem" if series == "b" else "stages.0"
    key = key.replace("stem.in_conv.", f"{stem}.op_list.0.")
    key = re.sub(r"^stem\.res(\d+)\.", lambda m: f"{stem}.op_list.{int(m.group(1)) + 1}.", key)
    if series == "b":
        key = re.sub(r"^stages\.(\d+)\.blocks\.", r"stages.\1.op_list.", key)
    else:
        key = re.sub(r"^stages\.(\d+)\.blocks\.", lambda m: f"stages.{int(m.group(1)) + 1}.op_list.", key)
    return "backbone." + key


@pytest.mark.parametrize("arch", ["b0", "b1", "b2", "b3", "l1", "l2", "l3"])
def test_same_outputs_as_timm(arch, bn_randomizer):
    torch.manual_seed(0)
    ref = timm.create_model(f"efficientvit_{arch}", pretrained=False).eval()
    bn_randomizer(ref)
    ref_eps = next(m.eps for m in ref.modules() if type(m).__name__ == "LiteMLA")
    ours = EfficientViTMITClassifier(arch, attn_eps=ref_eps).eval()
    series = ARCH_SETTINGS[arch]["series"]
    mapped = {timm_to_ours(k, series): v for k, v in ref.state_dict().items()}
    res = ours.load_state_dict(mapped, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    size = 160 if arch == "l3" else 224
    x = torch.randn(1 if arch == "l3" else 2, 3, size, size)
    with torch.no_grad():
        y_ref, y = ref(x), ours(x)
    assert torch.allclose(y, y_ref, atol=1e-4, rtol=1e-4), (y - y_ref).abs().max()


@pytest.mark.parametrize("arch,chs", [("b0", (8, 16, 32, 64, 128)), ("b3", (32, 64, 128, 256, 512)),
                                      ("l1", (32, 64, 128, 256, 512)), ("l3", (64, 128, 256, 512, 1024))])
def test_feature_strides_and_channels_any_size(arch, chs):
    with torch.device("meta"):
        m = EfficientViTMITBackbone(arch, out_indices=(0, 1, 2, 3, 4)).eval()
    assert m.out_channels == list(chs) and m.out_strides == [2, 4, 8, 16, 32]
    for h, w in [(224, 224), (97, 131), (801, 1203)]:
        outs = m(torch.empty(1, 3, h, w, device="meta"))
        for o, c, s in zip(outs, chs, (2, 4, 8, 16, 32)):
            assert o.shape == (1, c, -(-h // s), -(-w // s))


def test_l_series_uses_official_eps():
    b = EfficientViTMITBackbone("b1")
    l = EfficientViTMITBackbone("l1")
    assert {m.eps for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}
    assert {m.eps for m in l.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-7}


def test_linear_attention_fp32_under_bf16_autocast():
    """Values whose products overflow/lose precision in bf16 must still give finite, fp32-accurate outputs."""
    torch.manual_seed(0)
    att = LiteMLA(64, 64, dim=16).eval()
    with torch.no_grad():
        att.qkv.conv.weight.mul_(400.0)  # q/k/v of order 1e3-1e4: v.k^T sums exceed bf16's 8-bit mantissa range
    x = torch.randn(1, 64, 32, 32) * 10
    with torch.no_grad():
        ref = att(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = att(x)
    assert torch.isfinite(out).all()
    # the attention itself ran in fp32; only the 1x1 convs around it are bf16
    assert torch.allclose(out.float(), ref, rtol=5e-2, atol=5e-2 * ref.abs().max().item())

    # and the naive low-precision computation really is broken on this input (the test can fail)
    with torch.no_grad():
        qkv = att.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in att.aggreg], 1).to(torch.float16)
        B, _, H, W = qkv.shape
        q, k, v = qkv.reshape(B, -1, 48, H * W).split(16, dim=2)
        q, k = q.relu(), k.relu()
        v = torch.nn.functional.pad(v, (0, 0, 0, 1), value=1.0)
        naive = (v @ k.transpose(-1, -2)) @ q
    assert not torch.isfinite(naive).all()


def test_official_classification_checkpoint_converts_exactly(tmp_path):
    from effvit_plugins.checkpoint import load_weights_file, unwrap_state_dict
    m = EfficientViTMITClassifier("b0")
    torch.save({"state_dict": m.state_dict()}, tmp_path / "official_b0.pt")
    sd = convert_official_checkpoint(unwrap_state_dict(load_weights_file(str(tmp_path / "official_b0.pt"))))
    res = EfficientViTMITClassifier("b0").load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys


def test_inference_fast_path_equals_training_graph(bn_randomizer):
    """BN folding, in-place activations and channels-last (used without autograd) change nothing but rounding."""
    torch.manual_seed(0)
    m = EfficientViTMITBackbone("b1", out_indices=(1, 2, 3, 4)).eval()
    bn_randomizer(m)
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
