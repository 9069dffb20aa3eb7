"""Every Detectron2 config we ship (yacs .yaml and LazyConfig .py, found by walking configs/detectron2/) builds its
model, which then runs one training step and one inference on a small image.

Only sampling sizes are lowered for speed (proposals kept, RoIs sampled per image, detections per image); the
models themselves are exactly the configs'. Each LazyConfig is the twin of the yacs config of the same name: the same
model (module by module: classes, settings, parameter shapes, buffers), optimiser, schedule, data and evaluator."""
import functools
import glob
import math
import os
import types

import pytest
import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from omegaconf import OmegaConf

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
    """Mask R-CNN + RetinaNet per official variant, LVIS and Cityscapes per family, a LazyConfig per yacs config
    (same folder and name, under LazyConfigs/), and every Base file used."""
    names = [rel(p) for p in YAML]
    n_variants, n_families = sum(len(s.variants) for s in families()), len(families())
    assert len([n for n in names if n.startswith("COCO-InstanceSegmentation/")]) == n_variants
    assert len([n for n in names if n.startswith("COCO-Detection/")]) == n_variants
    assert len([n for n in names if n.startswith("LVISv1-InstanceSegmentation/")]) == n_families
    assert len([n for n in names if n.startswith("Cityscapes-SemanticSegmentation/")]) == n_families
    assert sorted(rel(p)[len("LazyConfigs/"):-3] for p in LAZY) == sorted(
        n[:-5] for n in names if not n.startswith("demo/"))
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


FUNCTIONS = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)


def _plain(value, depth=0):
    """A module attribute as comparable data: plain values as they are, tensors by shape (their values are compared
    as buffers), other objects by class and (a few levels deep) their own attributes."""
    if OmegaConf.is_config(value):  # a LazyConfig's list / dict argument, kept as given
        value = OmegaConf.to_container(value, resolve=True)
    if value is None or isinstance(value, (bool, int, float, str, type)):
        return value
    if isinstance(value, torch.Tensor):
        return "tensor", tuple(value.shape), value.dtype
    if isinstance(value, (list, tuple)):  # (yacs gives tuples where a LazyConfig gives lists)
        return [_plain(v, depth) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, depth) for k, v in value.items()}
    if isinstance(value, torch.nn.Module):
        return type(value)
    if depth < 3 and hasattr(value, "__dict__") and not isinstance(value, FUNCTIONS):  # Matcher, Box2BoxTransform...
        return type(value), _plain(vars(value), depth + 1)
    return type(value)


MODULE_INTERNALS = set(vars(torch.nn.Module()))


def module_settings(model):
    """{module name: (class, its own attributes)} for every submodule."""
    out = {name: (type(m), {k: _plain(v) for k, v in vars(m).items() if k not in MODULE_INTERNALS})
           for name, m in model.named_modules()}
    for cls, attrs in out.values():
        if cls is FastRCNNOutputLayers:  # a loss missing from loss_weight has weight 1 (yacs leaves loss_cls out)
            attrs["loss_weight"] = {"loss_cls": 1.0, "loss_box_reg": 1.0, **attrs["loss_weight"]}
    return out


def assert_same_model(model, twin):
    """Module by module the same classes and settings, the same parameters (shape, dtype, trainable) and the same
    buffers (values too: anchors, pixel mean/std, federated-loss class weights, attention-bias indices...)."""
    mine, theirs = module_settings(model), module_settings(twin)
    assert mine.keys() == theirs.keys(), set(mine) ^ set(theirs)
    differ = {f"{n or 'model'}.{k}": (mine[n][1].get(k), theirs[n][1].get(k)) for n in mine
              for k in set(mine[n][1]) | set(theirs[n][1]) if mine[n][1].get(k) != theirs[n][1].get(k)}
    differ.update({n: (mine[n][0], theirs[n][0]) for n in mine if mine[n][0] != theirs[n][0]})
    assert not differ, differ  # {attribute: (LazyConfig model's, yacs model's)}
    params = {n: (p.shape, p.dtype, p.requires_grad) for n, p in model.named_parameters()}
    assert params == {n: (p.shape, p.dtype, p.requires_grad) for n, p in twin.named_parameters()}
    buffers, twin_buffers = dict(model.named_buffers()), dict(twin.named_buffers())
    assert buffers.keys() == twin_buffers.keys()
    differ = [n for n, b in buffers.items()
              if not (b.shape == twin_buffers[n].shape and torch.equal(b, twin_buffers[n]))]
    assert not differ, differ


def value(node):
    """A LazyConfig node as plain data (interpolations resolved)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def assert_same_data(cfg, twin):
    """Datasets, input sizes, batch, sampler and evaluator of the LazyConfig = the yacs config's."""
    train, test = cfg.dataloader.train, cfg.dataloader.test
    assert [train.dataset.names] == list(twin.DATASETS.TRAIN) and [test.dataset.names] == list(twin.DATASETS.TEST)
    assert train.total_batch_size == twin.SOLVER.IMS_PER_BATCH
    assert train.mapper.image_format == test.mapper.image_format == twin.INPUT.FORMAT
    assert train.mapper.use_instance_mask == twin.MODEL.MASK_ON
    augs = [(a._target_.__name__, value({k: v for k, v in a.items() if k != "_target_"}))
            for a in train.mapper.augmentations]
    resize = ("ResizeShortestEdge", {"short_edge_length": list(twin.INPUT.MIN_SIZE_TRAIN),
                                     "max_size": twin.INPUT.MAX_SIZE_TRAIN,
                                     "sample_style": twin.INPUT.MIN_SIZE_TRAIN_SAMPLING})
    expected = [resize, ("RandomFlip", {"horizontal": True})]
    if twin.INPUT.CROP.ENABLED:  # Detectron2's DatasetMapper crops before resizing
        expected.insert(0, ("RandomCrop", {"crop_type": twin.INPUT.CROP.TYPE, "crop_size": list(twin.INPUT.CROP.SIZE)}))
    assert augs == expected
    (test_resize,) = test.mapper.augmentations
    assert (test_resize.short_edge_length, test_resize.max_size) == (twin.INPUT.MIN_SIZE_TEST, twin.INPUT.MAX_SIZE_TEST)
    if twin.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler":
        factors = train.sampler.repeat_factors
        assert (factors.repeat_thresh, factors.sqrt) == (twin.DATALOADER.REPEAT_THRESHOLD, twin.DATALOADER.REPEAT_SQRT)
        assert value(factors.dataset_dicts) == value(train.dataset)
    else:
        assert "sampler" not in train
    evaluator = cfg.dataloader.evaluator._target_.__name__
    kind = {"GeneralizedRCNN": "LVISEvaluator" if "lvis" in twin.DATASETS.TEST[0] else "COCOEvaluator",
            "RetinaNet": "COCOEvaluator", "SemanticSegmentor": "SemSegEvaluator"}[twin.MODEL.META_ARCHITECTURE]
    assert evaluator == kind
    if kind == "LVISEvaluator":
        assert cfg.dataloader.evaluator.max_dets_per_image == twin.TEST.DETECTIONS_PER_IMAGE


def assert_same_schedule(cfg, twin):
    """train.max_iter / checkpoint / evaluation periods and the learning-rate multiplier at every 1000th iteration
    (and through the warm-up) = the yacs config's schedule (our build_lr_scheduler, which the launcher gives
    Detectron2's scripts)."""
    from effvit_plugins.detectron2 import build_lr_scheduler

    assert cfg.train.max_iter == twin.SOLVER.MAX_ITER
    assert cfg.train.checkpointer.period == twin.SOLVER.CHECKPOINT_PERIOD
    assert cfg.train.eval_period == twin.TEST.EVAL_PERIOD
    lazy = instantiate(cfg.lr_multiplier)  # a function of the training progress, as lazyconfig_train_net.py uses it
    yacs = build_lr_scheduler(twin, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))._multiplier
    iters = sorted(set(range(0, twin.SOLVER.MAX_ITER, 1000)) | {1, 10, 100, 499, 500, 999, twin.SOLVER.MAX_ITER - 1})
    lazy_lr = [lazy(i / cfg.train.max_iter) for i in iters]
    yacs_lr = [yacs(i / twin.SOLVER.MAX_ITER) for i in iters]
    assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(lazy_lr, yacs_lr)), \
        list(zip(iters, lazy_lr, yacs_lr))


def assert_same_optimizer(cfg, twin, model):
    """AdamW with the yacs config's lr, betas, weight decay, and the same parameter groups as our yacs optimiser
    (effvit_plugins.detectron2.build_optimizer, which plain_train_net.py gets through the launcher)."""
    from effvit_plugins.detectron2 import build_optimizer

    optimizer = instantiate({**cfg.optimizer, "params": {**cfg.optimizer.params, "model": model}})
    yacs = build_optimizer(twin, model)
    assert type(optimizer) is type(yacs) is torch.optim.AdamW
    def groups(opt):
        return sorted((sorted(id(p) for p in g["params"]), g["lr"], tuple(g["betas"]), g["weight_decay"])
                      for g in opt.param_groups)
    assert groups(optimizer) == groups(yacs)
    assert optimizer.defaults["lr"] == twin.SOLVER.BASE_LR and tuple(optimizer.defaults["betas"]) == twin.SOLVER.BETAS


def trains(path):
    """Whether the LazyConfig test also runs a training step: for the smallest variant of each family (and every LVIS
    and Cityscapes config, one per family); the other models are checked equal to their yacs twins, which all train
    above."""
    name = os.path.basename(path)
    return "COCO-" not in rel(path) or any(f"_{s.d2_token}_{s.variants[0]}_" in name for s in families())


@pytest.mark.parametrize("path", LAZY, ids=rel)
def test_lazy_config_is_its_yaml_twin_and_trains(path):
    cfg = LazyConfig.load(path)
    assert cfg.train.device == "cpu"
    twin = yaml_cfg(os.path.join(D2_CONFIGS, os.path.relpath(path, os.path.join(D2_CONFIGS, "LazyConfigs")))[:-3]
                    + ".yaml")
    meta_arch = twin.MODEL.META_ARCHITECTURE
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert type(model).__name__ == meta_arch
    assert_same_model(model, build_model(twin))
    assert_same_data(cfg, twin)
    assert_same_schedule(cfg, twin)
    assert_same_optimizer(cfg, twin, model)
    if not trains(path):
        return
    # sampling sizes only, as for the yaml configs above
    if meta_arch == "GeneralizedRCNN":
        model.proposal_generator.post_nms_topk = {True: 64, False: 64}
        model.roi_heads.batch_size_per_image = 32
        model.roi_heads.box_predictor.test_topk_per_image = 10
    elif meta_arch == "RetinaNet":
        model.max_detections_per_image = 10
    train_step_and_inference(model, meta_arch)
