"""Every config we ship (found by walking configs/, not listed by hand) builds through the upstream registries of its
``default_scope`` (mmdet / mmseg / mmpretrain) and runs one ``loss`` and one ``predict`` step on a small random
input. A new config that does not is a failing test here.

Cheap on purpose: one 64x96 image (two 64x64 images for classifiers: their heads have BatchNorm1d), the loss
forward without a backward pass, the predict step under no_grad. Two-stage detectors sample 64 RoIs for the loss
and keep 20 proposals / 10 detections when predicting; RetinaNet ranks 100 boxes per level (an untrained detector
scores everything alike, so the configs' settings would rank thousands of boxes and run the mask head on 100 / 300
detections, for LVIS of 1203 classes each). The models are the real ones (L3 / L7 included).
"""
import glob
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import effvit_plugins  # noqa: F401  (registration, as custom_imports does)
from effvit_plugins.models.spec import families

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, "configs", "**", "*.py"), recursive=True)
                 if f"{os.sep}_base_{os.sep}" not in p
                 and not p.startswith(osp.join(ROOT, "configs", "detectron2", "")))  # tests/detectron2 walks those
H, W = 64, 96


def _det_inputs(cfg, num_classes):
    from mmdet.testing import demo_mm_inputs

    with_mask = "roi_head" in cfg.model and cfg.model.roi_head.get("mask_head") is not None
    return demo_mm_inputs(batch_size=1, image_shapes=[(3, H, W)], num_items=[2], num_classes=num_classes,
                          with_mask=with_mask)


def _det_num_classes(cfg):
    m = cfg.model
    head = m.get("bbox_head") or m.roi_head.bbox_head
    return head["num_classes"]


def _seg_inputs(cfg):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    num_classes = cfg.model.decode_head["num_classes"]
    g = torch.Generator().manual_seed(0)
    sample = SegDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
    sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, H, W), generator=g))
    return dict(inputs=[torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8)], data_samples=[sample])


def _cls_inputs(cfg):
    from mmpretrain.structures import DataSample

    g = torch.Generator().manual_seed(0)
    return dict(inputs=[torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8) for _ in range(2)],
                data_samples=[DataSample().set_gt_label(3), DataSample().set_gt_label(5)])


def _prepare(cfg, scope):
    """Adapt the config to a tiny input (no weights are loaded: init_cfg only acts in init_weights)."""
    if scope == "mmseg":
        # segmentors pad every image to the crop size (512 / 1024): use the test input's size instead
        cfg.model.data_preprocessor.size = (H, W)
    if scope == "mmdet":
        test_cfg, train_cfg = cfg.model.test_cfg, cfg.model.train_cfg
        if "rpn" in train_cfg:  # two-stage loss: 100 proposals, 64 sampled RoIs instead of 1000 / 512
            train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
            train_cfg.rcnn.sampler.update(num=64)
        if "rpn" in test_cfg:  # two-stage: 20 proposals, masks for 10 detections (LVIS keeps 300 of 1203 classes)
            test_cfg.rpn.update(nms_pre=100, max_per_img=20)
            test_cfg.rcnn.update(max_per_img=10)
        else:
            test_cfg.update(nms_pre=100)
    return cfg


def _check_predictions(scope, preds, cfg):
    p = preds[0]
    if scope == "mmdet":
        inst = p.pred_instances
        assert inst.bboxes.shape[-1] == 4 and len(inst.scores) == len(inst.labels) == len(inst.bboxes)
        if "roi_head" in cfg.model and cfg.model.roi_head.get("mask_head") is not None:
            assert "masks" in inst
    elif scope == "mmseg":
        assert tuple(p.pred_sem_seg.data.shape[-2:]) == (H, W)
    else:
        assert p.pred_score.shape == (cfg.model.head["num_classes"],)


def test_configs_found():
    scopes = {}
    for path in CONFIGS:
        scopes.setdefault(Config.fromfile(path).get("default_scope"), []).append(path)
    assert set(scopes) >= {"mmdet", "mmseg", "mmpretrain"}, sorted(scopes)
    # RetinaNet + Mask R-CNN for every variant and an LVIS Mask R-CNN per family (+ hand-written ones)
    assert len(scopes["mmdet"]) >= sum(2 * len(s.variants) + 1 for s in families())


@pytest.mark.parametrize("path", CONFIGS, ids=[osp.relpath(p, osp.join(ROOT, "configs")) for p in CONFIGS])
def test_config_builds_and_runs_loss_and_predict(path):
    cfg = Config.fromfile(path)
    scope = cfg.get("default_scope")
    assert scope in ("mmdet", "mmseg", "mmpretrain"), f"{path}: default_scope {scope!r}"
    assert cfg.get("custom_imports", {}).get("imports") == ["effvit_plugins"], "configs import effvit_plugins"
    cfg = _prepare(cfg, scope)
    with DefaultScope.overwrite_default_scope(scope):
        from mmengine.registry import MODELS

        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        if scope == "mmdet":
            data = _det_inputs(cfg, _det_num_classes(cfg))
        elif scope == "mmseg":
            data = _seg_inputs(cfg)
        else:
            data = _cls_inputs(cfg)
        model.train()
        batch = model.data_preprocessor(data, True)
        losses = model(**batch, mode="loss")
        total = sum(v.sum() for k, v in losses.items() if "loss" in k and torch.is_tensor(v))
        total += sum(sum(x.sum() for x in v) for k, v in losses.items() if "loss" in k and isinstance(v, list))
        assert torch.isfinite(total) and total.item() > 0, losses
        assert total.requires_grad
        model.eval()
        with torch.no_grad():
            batch = model.data_preprocessor(data, False)
            preds = model(**batch, mode="predict")
        _check_predictions(scope, preds, cfg)
