"""Checkpoints in the layout of the official EfficientFormer L1 / V2-S2 Mask R-CNN models (snap-research/EfficientFormer
detection/, mmdet 2.19: ``backbone.`` with the dense ``attention_biases_seg`` tables plus the unused ImageNet tables and
index buffers, mmdet's FPN / RPN / RoI head names) convert with tools/convert_checkpoint.py and load into our COCO
Mask R-CNN configs with 0 missing / 0 unexpected keys, giving the same features."""
import os.path as osp

import pytest
import torch

from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {"l1": "mask-rcnn_efficientformer-l1_fpn_8xb2-1x_coco.py",
           "s2": "mask-rcnn_efficientformerv2-s2_fpn_8xb2-1x_coco.py"}


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_official_mask_rcnn_checkpoint_converts_and_loads_exactly(arch, tmp_path, capsys, bn_randomizer,
                                                                  official_ef_dense, load_tool):
    cfg = load_config(osp.join(ROOT, "configs", "efficientformer", CONFIGS[arch]))
    torch.manual_seed(0)
    src = build_model_from_cfg(cfg)
    bn_randomizer(src)
    for name, p in src.named_parameters():  # non-trivial dense bias tables and layer scales
        if "attention_biases" in name or "layer_scale" in name:
            p.data.normal_()
    official = official_ef_dense(src, cfg.model.backbone)  # the official mmdet 2.x layout
    extra = set(official) - set(src.state_dict())
    assert extra and all(k.endswith(("attention_biases", "attention_bias_idxs", "attention_bias_idxs_seg"))
                         for k in extra)
    assert {k.split(".")[0] for k in official} == {"backbone", "neck", "rpn_head", "roi_head"}
    assert "roi_head.mask_head.conv_logits.weight" in official and "rpn_head.rpn_conv.weight" in official
    torch.save({"state_dict": official, "meta": {"mmdet_version": "2.19.0", "epoch": 12}}, tmp_path / "official.pth")
    assert load_tool("convert_checkpoint").main([str(tmp_path / "official.pth"), str(tmp_path / "ours.pth")]) == 0
    assert "detection checkpoint" in capsys.readouterr().out

    torch.manual_seed(1)
    fresh = build_model_from_cfg(cfg)
    res = fresh.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True)["state_dict"], strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    ours, theirs = fresh.state_dict(), src.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        for a, b in zip(fresh.extract_feat(x), src.extract_feat(x)):
            assert torch.equal(a, b)
