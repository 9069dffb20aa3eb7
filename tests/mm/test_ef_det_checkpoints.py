"""Checkpoints in the layout of the official EfficientFormer L1 / V2-S2 Mask R-CNN models (snap-research/EfficientFormer
detection/, mmdet 2.19: ``backbone.`` with the dense ``attention_biases_seg`` tables plus the unused ImageNet tables and
index buffers, mmdet's FPN / RPN / RoI head names) convert with tools/convert_checkpoint.py and load into our COCO
Mask R-CNN configs with 0 missing / 0 unexpected keys, giving the same features."""
import os.path as osp

import pytest
import torch

from effvit_plugins.mm.tools_common import load_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {"l1": "mask-rcnn_efficientformer-l1_fpn_8xb2-1x_coco.py",
           "s2": "mask-rcnn_efficientformerv2-s2_fpn_8xb2-1x_coco.py"}


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_official_mask_rcnn_checkpoint_converts_and_loads_exactly(arch, ef_dense_roundtrip):
    cfg = load_config(osp.join(ROOT, "configs", "efficientformer", CONFIGS[arch]))
    src, fresh, official, printed = ef_dense_roundtrip(cfg, {"mmdet_version": "2.19.0", "epoch": 12})
    assert {k.split(".")[0] for k in official} == {"backbone", "neck", "rpn_head", "roi_head"}
    assert "roi_head.mask_head.conv_logits.weight" in official and "rpn_head.rpn_conv.weight" in official
    assert "detection checkpoint" in printed
    ours, theirs = fresh.state_dict(), src.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        for a, b in zip(fresh.extract_feat(x), src.extract_feat(x)):
            assert torch.equal(a, b)
