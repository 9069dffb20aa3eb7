"""EfficientViTMSRAFPN / UpsampleFPN: mmdet's FPN where they overlap (same weights -> same outputs), the official
EfficientViTFPN behaviour for the transposed-conv levels, official parameter names, strides, registration."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.necks import FPN

import effvit_plugins  # noqa: F401  (registration)
from effvit_plugins.mm.necks import EfficientViTMSRAFPN
from effvit_plugins.models.upsample_fpn import UpsampleFPN
from effvit_plugins.testing import randomize_model

IN_CH = [128, 256, 384]  # EfficientViT-MSRA M4, strides 16 / 32 / 64


def feats(sizes=((13, 21), (7, 11), (4, 6)), channels=IN_CH, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, h, w, generator=g) for c, (h, w) in zip(channels, sizes)]


@pytest.mark.parametrize("kwargs", [
    dict(num_outs=3),
    dict(num_outs=5),  # two max-pooled levels
    dict(num_outs=5, add_extra_convs="on_input"),
    dict(num_outs=6, add_extra_convs="on_output", relu_before_extra_convs=True),
    dict(num_outs=4, add_extra_convs="on_lateral", start_level=1),
    dict(num_outs=3, norm_cfg=dict(type="BN")),
    dict(num_outs=4, norm_cfg=dict(type="GN", num_groups=32), no_norm_on_lateral=True),
])
def test_equals_mmdet_fpn_without_transposed_levels(kwargs):
    """Same state dict keys as mmdet's FPN (strict load) and the same outputs."""
    ref = FPN(IN_CH, 256, **kwargs).eval()
    randomize_model(ref, seed=1)
    ours = EfficientViTMSRAFPN(IN_CH, 256, **kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = feats()
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert len(a) == len(b) == kwargs["num_outs"]
    for u, v in zip(a, b):
        assert u.shape == v.shape
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)


def official_outputs(neck, x):
    """The official EfficientViTFPN forward written out with the neck's tensors (functional, no module calls)."""
    lat = [F.conv2d(xi, c.conv.weight, c.conv.bias) for xi, c in zip(x, neck.lateral_convs)]
    for i in range(len(lat) - 1, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
    extra, prev = [], lat[0]
    for t in neck.extra_trans_convs:  # chained 2x2 stride-2 transposed convs on the finest lateral
        prev = F.conv_transpose2d(prev, t.conv.weight, t.conv.bias, stride=2)
        extra.insert(0, prev)
    outs = [F.conv2d(lat[i], c.conv.weight, c.conv.bias, padding=1) for i, c in enumerate(neck.fpn_convs[:3])]
    if len(neck.fpn_convs) > 3:  # RetinaNet: one extra level by a stride-2 conv on the last backbone map
        c = neck.fpn_convs[3]
        outs.append(F.conv2d(x[-1], c.conv.weight, c.conv.bias, stride=2, padding=1))
    # extra_fpn_convs[i] is applied to extra[i], finest first
    extra_outs = [F.conv2d(e, c.conv.weight, c.conv.bias, padding=1) for c, e in zip(neck.extra_fpn_convs, extra)]
    return extra_outs + outs


@pytest.mark.parametrize("detector", ["retinanet", "mask-rcnn"])
def test_official_detection_settings(detector):
    if detector == "retinanet":  # official configs: strides 8..128 / 4..64
        kw, strides = dict(num_outs=5, add_extra_convs="on_input", num_extra_trans_convs=1), [8, 16, 32, 64, 128]
    else:
        kw, strides = dict(num_outs=5, num_extra_trans_convs=2), [4, 8, 16, 32, 64]
    neck = EfficientViTMSRAFPN(IN_CH, 256, **kw).eval()
    randomize_model(neck, seed=1)
    assert neck.out_strides([16, 32, 64]) == strides
    # a 160 x 224 image: backbone maps 10x14 / 5x7 / 3x4
    x = [f[:1] for f in feats(((10, 14), (5, 7), (3, 4)))]
    with torch.no_grad():
        out = neck(x)
    assert [tuple(o.shape[-2:]) for o in out] == [(-(-160 // s), -(-224 // s)) for s in strides]
    ref = official_outputs(neck, x)
    assert len(ref) == len(out)
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # official parameter names (mmcv ConvModule: .conv), no norms
    keys = set(neck.state_dict())
    n_fpn = 4 if detector == "retinanet" else 3
    n_trans = kw["num_extra_trans_convs"]
    expected = {f"{m}.{i}.conv.{p}" for p in ("weight", "bias") for m, n in
                (("lateral_convs", 3), ("fpn_convs", n_fpn), ("extra_trans_convs", n_trans),
                 ("extra_fpn_convs", n_trans)) for i in range(n)}
    assert keys == expected
    assert neck.extra_trans_convs[0].conv.weight.shape == (256, 256, 2, 2)
    if detector == "retinanet":
        assert neck.fpn_convs[3].conv.weight.shape == (256, 384, 3, 3)  # on the stride-64 backbone map


def test_odd_sizes_and_errors():
    neck = EfficientViTMSRAFPN(IN_CH, 64, num_outs=5, num_extra_trans_convs=2)
    out = neck(feats(((13, 21), (7, 11), (4, 6)), seed=3))
    assert [tuple(o.shape[-2:]) for o in out] == [(52, 84), (26, 42), (13, 21), (7, 11), (4, 6)]
    with pytest.raises(ValueError, match="num_outs=4 is smaller"):
        EfficientViTMSRAFPN(IN_CH, 64, num_outs=4, num_extra_trans_convs=2)
    with pytest.raises(ValueError, match="add_extra_convs"):
        EfficientViTMSRAFPN(IN_CH, 64, num_outs=5, add_extra_convs="on_nothing")
    with pytest.raises(ValueError, match="expects 3 input maps"):
        neck(feats()[:2])
    with pytest.raises(ValueError, match="norm_cfg"):
        EfficientViTMSRAFPN(IN_CH, 64, num_outs=3, norm_cfg=dict(type="LN"))
    with pytest.raises(ValueError, match="upsample_cfg"):
        EfficientViTMSRAFPN(IN_CH, 64, num_outs=3, upsample_cfg=dict(mode="nearest", scale_factor=2))


def test_initialisation_matches_official():
    """Convs: Xavier-uniform (FPN.init_weights); transposed convs: mmcv ConvModule's Kaiming-normal, zero bias."""
    torch.manual_seed(0)
    neck = EfficientViTMSRAFPN([256, 256, 256], 256, num_outs=5, num_extra_trans_convs=2)
    neck.init_weights()
    w = neck.fpn_convs[0].conv.weight
    bound = (6 / (w.shape[0] * 9 + w.shape[1] * 9)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound and neck.fpn_convs[0].conv.bias.abs().sum() == 0
    t = neck.extra_trans_convs[0].conv
    fan_out = t.weight.shape[0] * 4  # torch's fan_out of a (in, out, 2, 2) transposed-conv weight
    assert abs(t.weight.std().item() - (2 / fan_out) ** 0.5) < 0.1 * (2 / fan_out) ** 0.5
    assert t.bias.abs().sum() == 0
    # an init_cfg is honoured (mmengine initialisers)
    neck = EfficientViTMSRAFPN([64, 64, 64], 64, num_outs=3, init_cfg=dict(type="Constant", layer="Conv2d", val=0.5))
    neck.init_weights()
    assert torch.all(neck.lateral_convs[0].conv.weight == 0.5)


def test_registered_in_mmdet_and_mmseg():
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG

    from effvit_plugins.registry import MODELS as OWN

    for reg in (DET, SEG, OWN):
        assert reg.get("EfficientViTMSRAFPN") is EfficientViTMSRAFPN
    neck = DET.build(dict(type="EfficientViTMSRAFPN", in_channels=IN_CH, out_channels=32, num_outs=5,
                          num_extra_trans_convs=2))
    assert isinstance(neck, UpsampleFPN)
