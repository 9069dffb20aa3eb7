"""The generated detection configs (scripts/configgen/mmdet.py): RetinaNet + Mask R-CNN on COCO for every variant
of every family and Mask R-CNN on LVIS v1 for its det_variant, the family's official recipe where its spec has one,
the official dense-backbone options, consistent strides between backbone, neck and heads, the LVIS settings, and a
header that names the recipe and the published result (their staleness: tests/scripts/test_gen_configs.py)."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

import effvit_plugins  # noqa: F401
from effvit_plugins.models.spec import families
from effvit_plugins.registry import MODELS as OWN

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, "scripts"))
import configgen  # noqa: E402
from configgen.common import METRIC_NAMES, official_recipe  # noqa: E402

DET = [g for g in configgen.generated() if g.framework == "mmdet"]


def test_every_variant_and_the_lvis_variant():
    for spec in families():
        got = {(g.variant, g.task, g.dataset) for g in DET if g.spec is spec}
        assert got == {(v, kind, "coco") for v in spec.variants for kind in ("retinanet", "mask-rcnn")} | {
            (spec.det_variant, "mask-rcnn", "lvis")}, spec.key


def _header(path):
    return "".join(line for line in open(path) if line.startswith("#"))


@pytest.mark.parametrize("g", DET, ids=[osp.basename(g.path) for g in DET])
def test_config_contents(g):
    path = osp.join(ROOT, g.path)
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
    # the official dense backbone's options
    assert {k: bb[k] for k in bb if k not in ("type", "arch", "out_indices")} == \
        g.spec.dense_backbone_kwargs(g.variant, "det")
    flat = " ".join(head.replace("#", " ").split())
    recipe = official_recipe(g.spec, g.task, g.variant)
    if recipe:  # the family's official recipe (spec.official_recipes) on the 1x schedule
        assert (opt.lr, opt.weight_decay) == (recipe.lr, recipe.weight_decay)
        assert (cfg.param_scheduler[0].end, cfg.param_scheduler[0].start_factor) == (
            recipe.warmup_iters, recipe.warmup_factor)
        assert cfg.optim_wrapper.get("paramwise_cfg", {}) == (
            dict(custom_keys={k: dict(decay_mult=0.0) for k in recipe.no_decay}) if recipe.no_decay else {})
        assert f"Recipe: official ({recipe.source_of(g.variant)})" in flat
    else:  # mmdet's standard AdamW recipe for transformer backbones
        assert (opt.lr, opt.weight_decay, cfg.param_scheduler[0].end) == (1e-4, 0.05, 1000)
        assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0
        assert "no official recipe exists" in head
    for metric, figure in g.published:  # from effvit_plugins/data/published_results.json
        assert f"{METRIC_NAMES[metric]} {figure.text}" in flat.split("Published: ", 1)[1]
    if not g.published:
        assert "# Published: none published" in head
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
