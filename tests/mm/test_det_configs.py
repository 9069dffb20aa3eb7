"""The detection configs: generated and up to date, official recipes where they exist, consistent strides between
backbone, neck and heads, the LVIS settings, and a header that names the recipe and the published result."""
import glob
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import effvit_plugins  # noqa: F401
from effvit_plugins.registry import MODELS as OWN

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = sorted(glob.glob(osp.join(ROOT, "configs", "*", "retinanet_*.py"))
             + glob.glob(osp.join(ROOT, "configs", "*", "mask-rcnn_*.py")))
DET = [p for p in DET if "/demo/" not in p]


def _generator():
    spec = importlib.util.spec_from_file_location("_gen_det", osp.join(ROOT, "scripts", "gen_det_configs.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_and_up_to_date(capsys):
    gen = _generator()
    assert gen.main(["--check"]) == 0, capsys.readouterr().out
    cfgs = gen.configs()
    assert sorted(osp.join(ROOT, k) for k in cfgs if "/demo/" not in k) == DET
    # every variant of every family: RetinaNet + Mask R-CNN on COCO, and LVIS for one variant per backbone type
    variants = {(c["family"]["type"], c["variant"]) for c in cfgs.values() if not c.get("demo")}
    assert len(variants) == 7 + 6 + 3 + 3 + 4
    for fam, v in variants:
        assert {(c["detector"], c["dataset"]) for c in cfgs.values()
                if not c.get("demo") and (c["family"]["type"], c["variant"]) == (fam, v)} >= {
            ("retinanet", "coco"), ("mask-rcnn", "coco")}
    assert {c["family"]["type"] for c in cfgs.values() if c.get("dataset") == "lvis"} == {
        "EfficientViTMIT", "EfficientViTMSRA", "EdgeViT", "EfficientFormerV1", "EfficientFormerV2"}


def _header(path):
    return "".join(line for line in open(path) if line.startswith("#"))


@pytest.mark.parametrize("path", DET, ids=[osp.basename(p) for p in DET])
def test_config_contents(path):
    cfg = Config.fromfile(path)
    name, head = osp.basename(path), _header(path)
    assert "# Recipe:" in head and "# Published:" in head and cfg.default_scope == "mmdet"
    bb, neck, model = cfg.model.backbone, cfg.model.neck, cfg.model
    # channels: the neck reads exactly what the backbone returns
    with torch.device("meta"):
        backbone = OWN.get(bb.type)(**{k: v for k, v in bb.items() if k != "type"})
    assert list(neck.in_channels) == list(backbone.out_channels)
    strides = list(backbone.out_strides)
    if neck.type == "EfficientViTMSRAFPN":
        from effvit_plugins.models.upsample_fpn import UpsampleFPN

        out = UpsampleFPN(neck.in_channels, 8, neck.num_outs, add_extra_convs=neck.get("add_extra_convs", False),
                          num_extra_trans_convs=neck.num_extra_trans_convs).out_strides(strides)
    else:
        out = strides[neck.get("start_level", 0):]
        out += [out[-1] * 2 ** (k + 1) for k in range(neck.num_outs - len(out))]
    if cfg.model.type == "RetinaNet":
        assert out == list(model.bbox_head.anchor_generator.strides) == [8, 16, 32, 64, 128]
    else:
        assert out == list(model.rpn_head.anchor_generator.strides) == [4, 8, 16, 32, 64]
        assert list(model.roi_head.bbox_roi_extractor.featmap_strides) == out[:4]
    # recipes
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == "AdamW" and cfg.train_cfg.max_epochs == 12 and cfg.train_dataloader.batch_size == 2
    assert cfg.param_scheduler[1].milestones == [8, 11]
    if bb.type == "EfficientViTMSRA" and bb.arch == "m4":
        assert (opt.lr, opt.weight_decay, cfg.param_scheduler[0].end, cfg.param_scheduler[0].start_factor) == (
            1e-4, 0.05, 500, 0.001)
        assert cfg.optim_wrapper.paramwise_cfg == dict(custom_keys={"attention_biases": dict(decay_mult=0.0)})
        assert bb.norm_eval  # the official downstream backbone keeps BN statistics frozen
        if "coco" in name:
            assert ("box AP 32.7" if name.startswith("retinanet") else "mask AP 31.0") in head
    elif bb.type.startswith("EfficientFormer") and name.startswith("mask-rcnn"):
        v1 = bb.type == "EfficientFormerV1"
        assert (opt.lr, opt.weight_decay, cfg.param_scheduler[0].start_factor) == (2e-4, 1e-4 if v1 else 0.05, 1e-6)
        assert "paramwise_cfg" not in cfg.optim_wrapper and "official (snap-research/EfficientFormer" in head
    else:  # mmdet's standard AdamW recipe for transformer backbones
        assert (opt.lr, opt.weight_decay, cfg.param_scheduler[0].end) == (1e-4, 0.05, 1000)
        assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0
        assert "no official recipe exists" in head and "# Published: none published." in head
    if bb.type.startswith("EfficientFormer"):
        assert bb.seg_resolution == (25 if bb.type == "EfficientFormerV1" else 800)
    # LVIS v1
    if "lvis-v1" in name:
        assert model.roi_head.bbox_head.num_classes == model.roi_head.mask_head.num_classes == 1203
        assert model.test_cfg.rcnn.score_thr == 1e-4 and model.test_cfg.rcnn.max_per_img == 300
        train = cfg.train_dataloader.dataset
        assert train.type == "ClassBalancedDataset" and train.oversample_thr == 1e-3
        assert train.dataset.type == cfg.test_dataloader.dataset.type == "LVISV1Dataset"
        assert cfg.test_evaluator.type == "LVISMetric" and list(cfg.test_evaluator.metric) == ["bbox", "segm"]
    else:
        head_cls = model.bbox_head if cfg.model.type == "RetinaNet" else model.roi_head.bbox_head
        assert head_cls.num_classes == 80 and cfg.test_evaluator.type == "CocoMetric"
