"""torch.compile: every backbone, classification head, neck and segmentation head of ours is captured as ONE graph
(no graph break, no recompilation for a fixed input size) in training mode and in eval mode under ``no_grad`` --
where the eager CPU inference paths (BatchNorm folding caches, GEMM 1x1 convs, the token-layout linear attention
writing with ``out=``) would otherwise run -- and the captured graph computes what the eager module computes.
The smallest variant of each family at 64x96; the backend only counts graphs (no code generation), see
:func:`effvit_plugins.testing.assert_one_graph`."""
import pytest
import torch

from effvit_plugins import testing
from effvit_plugins.models.efficientvit_mit import SegHeadCore, _seg_head_kwargs
from effvit_plugins.models.spec import families
from effvit_plugins.models.upsample_fpn import UpsampleFPN

FAMILIES = families()
IDS = [spec.key for spec in FAMILIES]
MODES = pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
H, W = 64, 96


def image():
    return torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(0))


@MODES
@pytest.mark.parametrize("spec", FAMILIES, ids=IDS)
def test_backbone_is_one_graph(spec, training):
    torch.manual_seed(0)
    m = testing.randomize_model(testing.build_backbone(spec), weights=False)
    testing.assert_one_graph(m, image(), training=training, name=f"{spec.key} backbone")


@MODES
@pytest.mark.parametrize("spec", FAMILIES, ids=IDS)
def test_classification_head_is_one_graph(spec, training):
    torch.manual_seed(0)
    clf = testing.build_classifier(spec).eval()
    with torch.no_grad():
        feats = clf.backbone(image())
    testing.assert_one_graph(clf.head, feats, training=training, name=f"{spec.key} ImageNet head")


def _seg_inputs():
    kw = _seg_head_kwargs("b0", "cityscapes")
    num_classes = kw.pop("num_classes")
    feats = [torch.randn(2, c, H // s, W // s) for c, s in zip(kw["in_channels"], (32, 16, 8))]
    return kw, num_classes, feats


@MODES
def test_mit_seg_head_is_one_graph(training):
    kw, _, feats = _seg_inputs()
    torch.manual_seed(0)
    testing.assert_one_graph(testing.randomize_model(SegHeadCore(**kw), weights=False), feats, training=training,
                             name="SegHeadCore")


@MODES
def test_mmseg_seg_head_is_one_graph(training):
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    import effvit_plugins  # noqa: F401  (registration)

    kw, num_classes, feats = _seg_inputs()
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("mmseg"):
        head = MODELS.build(dict(type="EfficientViTMITSegHead", in_index=[2, 1, 0], num_classes=num_classes, **kw))
    # the decode head reads the backbone's maps finest first, selects them with in_index
    testing.assert_one_graph(testing.randomize_model(head, weights=False), feats[::-1], training=training,
                             name="EfficientViTMITSegHead")


@MODES
@pytest.mark.parametrize("options", [dict(num_outs=5, num_extra_trans_convs=2),  # official Mask R-CNN neck
                                     dict(num_outs=6, num_extra_trans_convs=1, add_extra_convs="on_input",
                                          norm="BN")],  # RetinaNet's, with BN
                         ids=["maskrcnn", "retinanet-bn"])
def test_upsample_fpn_is_one_graph(options, training):
    torch.manual_seed(0)
    fpn = testing.randomize_model(UpsampleFPN([64, 128, 192], 32, **options), weights=False)
    feats = [torch.randn(2, c, H // s, W // s) for c, s in zip([64, 128, 192], (16, 32, 64))]
    testing.assert_one_graph(fpn, feats, training=training, name="UpsampleFPN")
