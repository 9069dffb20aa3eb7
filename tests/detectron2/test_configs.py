"""Every Detectron2 config we ship (yacs .yaml and LazyConfig .py, found by walking configs/detectron2/) builds its
model, which then runs one training step and one inference on a small image.

Only sampling sizes are lowered for speed (proposals kept, RoIs sampled per image, detections per image); the
models themselves are exactly the configs'. The LazyConfig models must also have the same tensors as their yacs
twins."""
import glob
import os

import pytest
import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from effvit_plugins.detectron2 import add_effvit_config
from effvit_plugins.models.spec import families

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
D2_CONFIGS = os.path.join(ROOT, "configs", "detectron2")
BASES = sorted(glob.glob(os.path.join(D2_CONFIGS, "Base-*.yaml")))
YAML = sorted(p for p in glob.glob(os.path.join(D2_CONFIGS, "**", "*.yaml"), recursive=True) if p not in BASES)
LAZY = sorted(p for p in glob.glob(os.path.join(D2_CONFIGS, "LazyConfigs", "**", "*.py"), recursive=True)
              if os.sep + "common" + os.sep not in p)
H, W = 64, 96


def rel(path):
    return os.path.relpath(path, D2_CONFIGS)


def test_config_inventory():
    """Mask R-CNN + RetinaNet per official variant, LVIS and Cityscapes per family, LazyConfig per Mask R-CNN
    config, and every Base file used."""
    names = [rel(p) for p in YAML]
    n_variants, n_families = sum(len(s.variants) for s in families()), len(families())
    assert len([n for n in names if n.startswith("COCO-InstanceSegmentation/")]) == n_variants
    assert len([n for n in names if n.startswith("COCO-Detection/")]) == n_variants
    assert len([n for n in names if n.startswith("LVISv1-InstanceSegmentation/")]) == n_families
    assert len([n for n in names if n.startswith("Cityscapes-SemanticSegmentation/")]) == n_families
    assert sorted(os.path.basename(p)[:-3] for p in LAZY) == sorted(
        os.path.basename(n)[:-5] for n in names if n.startswith("COCO-InstanceSegmentation/"))
    used = {open(p).read().split('_BASE_: "')[1].split('"')[0] for p in YAML if "_BASE_" in open(p).read()}
    assert {os.path.basename(b) for b in BASES} <= {os.path.basename(u) for u in used}


def sample(meta_arch):
    img = torch.randint(0, 256, (3, H, W), dtype=torch.uint8)
    d = {"image": img, "height": H, "width": W}
    if meta_arch == "SemanticSegmentor":
        sem = torch.full((H, W), 255, dtype=torch.long)
        sem[8:56, 8:80] = torch.randint(0, 19, (1,))
        d["sem_seg"] = sem
    else:
        inst = Instances((H, W))
        inst.gt_boxes = Boxes(torch.tensor([[10.0, 8.0, 50.0, 56.0], [40.0, 20.0, 90.0, 60.0]]))
        inst.gt_classes = torch.tensor([0, 1])
        masks = torch.zeros(2, H, W, dtype=torch.bool)
        masks[0, 8:56, 10:50] = True
        masks[1, 20:60, 40:90] = True
        inst.gt_masks = BitMasks(masks)
        d["instances"] = inst
    return d


def train_step_and_inference(model, meta_arch):
    model.train()
    with EventStorage(0):
        losses = model([sample(meta_arch)])
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    backbone = model.backbone.bottom_up
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": torch.randint(0, 256, (3, H, W), dtype=torch.uint8), "height": 2 * H,
                         "width": 2 * W}])
    if meta_arch == "SemanticSegmentor":
        assert out["sem_seg"].shape == (model.sem_seg_head.predictor.out_channels, 2 * H, 2 * W)
    else:
        assert out["instances"].image_size == (2 * H, 2 * W)
        assert out["instances"].has("pred_masks") == (meta_arch == "GeneralizedRCNN")
    return losses


def yaml_cfg(path):
    cfg = add_effvit_config(get_cfg())
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.mark.parametrize("path", YAML, ids=rel)
def test_yaml_config_trains_and_infers(path):
    cfg = yaml_cfg(path)
    # sampling sizes only (not the model): fewer proposals / sampled RoIs / kept detections
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 64
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    torch.manual_seed(0)
    model = build_model(cfg)
    assert type(model).__name__ == cfg.MODEL.META_ARCHITECTURE
    assert model.backbone.bottom_up.family == cfg.MODEL.EFFVIT.FAMILY
    losses = train_step_and_inference(model, cfg.MODEL.META_ARCHITECTURE)
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        assert {"loss_rpn_cls", "loss_cls", "loss_mask"} <= set(losses)


@pytest.mark.parametrize("path", LAZY, ids=rel)
def test_lazy_config_trains_and_infers(path):
    cfg = LazyConfig.load(path)
    cfg.model.proposal_generator.post_nms_topk = (64, 64)
    cfg.model.roi_heads.batch_size_per_image = 32
    cfg.model.roi_heads.box_predictor.test_topk_per_image = 10
    assert cfg.train.device == "cpu" and cfg.dataloader.train.mapper.image_format == "RGB"
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    twin = yaml_cfg(os.path.join(D2_CONFIGS, os.path.relpath(path, os.path.join(D2_CONFIGS, "LazyConfigs")))[:-3]
                    + ".yaml")
    twin.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        twin_model = build_model(twin)
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in twin_model.state_dict().items()}
    bb, twin_bb = model.backbone.bottom_up, twin_model.backbone.bottom_up
    assert (type(bb), bb.out_features, bb.norm_eval) == (type(twin_bb), twin_bb.out_features, twin_bb.norm_eval)
    optimizer = instantiate({**cfg.optimizer, "params": {**cfg.optimizer.params, "model": model}})
    assert type(optimizer).__name__ == "AdamW" and optimizer.defaults["lr"] == twin.SOLVER.BASE_LR
    train_step_and_inference(model, "GeneralizedRCNN")
