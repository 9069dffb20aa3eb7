"""EfficientFormer V2 core (effvit_plugins.models.efficientformer_v2): what is specific to V2.

Oracle for the official names and values: timm's EfficientFormerV2 model, reached through **our hand-written key
map** ``official_to_timm`` below (timm 1.0.31 has no official -> timm filter for V2: its weights are re-hosted in
timm's layout). The map is the name correspondence read from the official and timm state dicts
(snap-research/EfficientFormer models/efficientformer_v2.py against timm/models/efficientformer_v2.py, timm
1.0.31); it renames keys, drops the derived index buffers (non-persistent in timm) and reshapes
the layer scales from the official (C, 1, 1) to timm's (C,) -- it reorders nothing. Our classifier is randomised
(weights, BN statistics, attention-bias tables, layer scales), written in the official layout, mapped and loaded
strictly into timm; the logits must agree.

The shared backbone behaviour is tested for every family in test_backbone_contract.py.
"""
import re

import pytest
import torch

from effvit_plugins.checkpoint import unwrap_state_dict
from effvit_plugins.models.efficientformer_v2 import (ARCH_SETTINGS, EfficientFormerV2Backbone,
                                                      EfficientFormerV2Classifier, convert_official_checkpoint,
                                                      infer_arch)
from effvit_plugins.models.layers import resize_bias_map

VARIANTS = list(ARCH_SETTINGS)

# Parameters (with the distillation head) and MACs at 224: our measurements of the official code
# (snap-research/EfficientFormer models/efficientformer_v2.py, arXiv 2212.08059), asserted within their rounding; the
# exact parameter count is timm's. The README's 3.5 / 6.1 / 12.6 / 26.1M match the official code's count neither with
# nor without the distillation head nor with BN folded (unresolved, not asserted); its 0.40 / 0.65 / 1.25 / 2.56B MACs
# agree with the measurement.
OFFICIAL_PARAMS = {"s0": "3.60M", "s1": "6.19M", "s2": "12.71M", "l": "26.32M"}
OFFICIAL_MACS_224 = {"s0": "0.396G", "s1": "0.652G", "s2": "1.247G", "l": "2.553G"}
CHANNELS = {"s0": [32, 48, 96, 176], "s1": [32, 48, 120, 224], "s2": [32, 64, 144, 288], "l": [40, 80, 192, 384]}

# official -> timm names (official models/efficientformer_v2.py -> timm/models/efficientformer_v2.py), applied in
# this order
_OFFICIAL_TO_TIMM = [
    (r"^patch_embed\.0\.", "stem.conv1.conv."), (r"^patch_embed\.1\.", "stem.conv1.bn."),
    (r"^patch_embed\.3\.", "stem.conv2.conv."), (r"^patch_embed\.4\.", "stem.conv2.bn."),
    (r"^network\.5\.conv\.", "stages.3.downsample.conv.conv."), (r"^network\.5\.bn\.", "stages.3.downsample.conv.bn."),
    (r"^network\.5\.attn\.", "stages.3.downsample.attn."),
    (r"^network\.([13])\.proj\.", lambda m: f"stages.{(int(m[1]) + 1) // 2}.downsample.conv.conv."),
    (r"^network\.([13])\.norm\.", lambda m: f"stages.{(int(m[1]) + 1) // 2}.downsample.conv.bn."),
    (r"^network\.(\d)\.(\d+)\.", lambda m: f"stages.{int(m[1]) // 2}.blocks.{m[2]}."),
    (r"\.mlp\.fc1\.", ".mlp.fc1.conv."), (r"\.mlp\.norm1\.", ".mlp.fc1.bn."),
    (r"\.mlp\.mid\.", ".mlp.mid.conv."), (r"\.mlp\.mid_norm\.", ".mlp.mid.bn."),
    (r"\.mlp\.fc2\.", ".mlp.fc2.conv."), (r"\.mlp\.norm2\.", ".mlp.fc2.bn."),
    (r"\.q\.local\.0\.", ".q.local."), (r"\.q\.proj\.0\.", ".q.proj.conv."), (r"\.q\.proj\.1\.", ".q.proj.bn."),
    (r"\.(q|k|v|v_local|stride_conv)\.0\.", r".\1.conv."), (r"\.(q|k|v|v_local|stride_conv)\.1\.", r".\1.bn."),
    (r"\.proj\.1\.", ".proj.conv."), (r"\.proj\.2\.", ".proj.bn."),
    (r"\.layer_scale_([12])$", r".ls\1.gamma"),
    (r"^dist_head\.", "head_dist."),
]


def official_to_timm(state_dict):
    out = {}
    for k, v in state_dict.items():
        if k.endswith("attention_bias_idxs"):
            continue  # derived (timm: non-persistent, computed by timm)
        for pattern, repl in _OFFICIAL_TO_TIMM:
            k = re.sub(pattern, repl, k)
        out[k] = v.flatten() if k.endswith(".gamma") else v  # layer scales (C, 1, 1) -> (C,)
    return out


@pytest.mark.parametrize("arch", VARIANTS)
def test_params_macs_and_widths(arch, complexity, on_meta):
    ours = on_meta(EfficientFormerV2Classifier, arch)
    complexity(ours, OFFICIAL_PARAMS[arch], OFFICIAL_MACS_224[arch], timm_name=f"efficientformerv2_{arch}")
    assert ours.backbone.stage_channels == CHANNELS[arch]


@pytest.mark.parametrize("arch", VARIANTS)
def test_official_names_through_key_map_into_timm(arch, randomized, to_official, timm_from, logits_agree, on_meta):
    ours = randomized(on_meta(EfficientFormerV2Classifier, arch), seed=1)
    official = to_official(ours)
    assert infer_arch(official) == arch
    assert official["network.6.0.layer_scale_2"].shape[1:] == (1, 1)  # official (C, 1, 1) layer scales
    assert "network.5.attn.attention_biases" in official and "dist_head.weight" in official
    ref = timm_from(f"efficientformerv2_{arch}", official_to_timm(unwrap_state_dict({"model": official})))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))  # fixed 224 in timm
    logits_agree(ours, ref, x, atol=1e-4)


def test_attention_bias_exact_resized_and_cached():
    torch.manual_seed(0)
    bb = EfficientFormerV2Backbone("s0").eval()
    attn = bb.network[6][-1].token_mixer  # stage-4 attention, table for 7x7
    down = bb.network[5].attn  # attention downsampling, table for 14x14 -> 7x7
    with torch.no_grad():
        attn.attention_biases.normal_()
        down.attention_biases.normal_()
    exact = attn.attention_biases[:, attn.attention_bias_idxs]
    assert torch.equal(attn.attention_bias(49, 49, torch.float32), exact)
    assert down.attention_bias(49, 196, torch.float32).shape == (8, 49, 196)
    with torch.no_grad():
        big = attn.attention_bias(256, 256, torch.float32)
        assert attn.attention_bias(256, 256, torch.float32) is big  # cached at inference (eval, no autograd)
    torch.testing.assert_close(big, resize_bias_map(exact.detach(), (256, 256)))
    again = attn.attention_bias(256, 256, torch.float32)  # autograd on: recomputed, so gradients reach the table
    assert again is not big and again.requires_grad
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
    model = EfficientFormerV2Classifier("s0", num_classes=10)
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


def test_converter_handles_prefixes_and_drop_path(on_meta):
    ours = on_meta(EfficientFormerV2Classifier, "s0")
    sd = {"module." + k.split(".", 1)[1]: v for k, v in ours.state_dict().items()}  # official names
    sd["module.network.6.3.token_mixer.attention_bias_idxs"] = torch.zeros(49, 49, dtype=torch.long)
    converted = convert_official_checkpoint(unwrap_state_dict({"model": sd}))
    assert set(converted) == set(ours.state_dict())
    bb = on_meta(EfficientFormerV2Backbone, "l", drop_path_rate=0.1)
    rates = [m.drop_prob for m in bb.modules() if m.__class__.__name__ == "DropPath"]
    assert len(rates) == sum(ARCH_SETTINGS["l"]["depths"]) - 1 and max(rates) == pytest.approx(0.1)


def test_efficientformer_versions_do_not_mix():
    """Through the OpenMMLab registry: a V1 name for V2 (and back) is an error naming the valid variants."""
    from effvit_plugins.testing import build_mm_backbone

    with pytest.raises(ValueError, match="Valid variants: s0, s1, s2, l"):
        build_mm_backbone("efficientformer_v2", None)
    with pytest.raises(ValueError, match="Unknown EfficientFormer-V2 variant 'l1'"):
        build_mm_backbone("efficientformer_v2", "l1")
    with pytest.raises(ValueError, match="Unknown EfficientFormer-V1 variant 's0'"):
        build_mm_backbone("efficientformer_v1", "s0")
