"""Detectron2's own tools/lazyconfig_train_net.py (its source tree's tools/, commit 02b5c4e, from
effvit_plugins.testing.detectron2_tools_dir()), UNMODIFIED and without our launcher, on a LazyConfig of each task:
COCO Mask R-CNN, COCO RetinaNet, LVIS v1 Mask R-CNN and Cityscapes Semantic FPN, each the smallest variant of a
different family, trained 2 iterations on the CPU on tiny generated datasets in the real layouts (given as the
script's own ``key=value`` overrides), then evaluated by the LazyConfig's evaluator. Checked from what the script
writes: the checkpoint (the LazyConfig's model, and the optimiser state: AdamW with the config's betas, learning
rate and weight-decay groups), the metrics of the evaluator, the saved config; the Mask R-CNN checkpoint is then
evaluated again with --eval-only (the same metrics)."""
import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from effvit_plugins.detectron2.checkpoint import load_d2_checkpoint
from effvit_plugins.models.spec import get_family
from effvit_plugins.testing import detectron2_results, detectron2_tools_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAZY = os.path.join(ROOT, "configs", "detectron2", "LazyConfigs")
DEMO = {"coco": "coco_demo", "lvis": "lvis_v1_demo", "cityscapes": "cityscapes_demo"}  # folders of the demo sets


def lazy_config(folder, pattern, family, variant=None):
    spec = get_family(family)
    name = pattern.format(name=f"{spec.d2_token}_{variant or spec.variants[0]}",
                          neck="upfpn" if spec.upsample_neck else "fpn")
    return os.path.join(LAZY, folder, name + ".py")


# task -> (LazyConfig, demo set, its registered names, the evaluator's tasks and metrics)
CASES = {
    "mask_rcnn": (lazy_config("COCO-InstanceSegmentation", "mask_rcnn_{name}_{neck}_1x", "efficientvit_msra"),
                  "coco", "coco_demo", {"bbox": {"AP", "AP50", "AP75", "APs"}, "segm": {"AP", "AP50", "AP75", "APs"}}),
    "retinanet": (lazy_config("COCO-Detection", "retinanet_{name}_{neck}_1x", "efficientvit_mit"),
                  "coco", "coco_demo", {"bbox": {"AP", "AP50", "AP75", "APs"}}),
    "lvis": (lazy_config("LVISv1-InstanceSegmentation", "mask_rcnn_{name}_{neck}_1x", "edgevit", "xs"),
             "lvis", "lvis_v1_demo", {"bbox": {"AP", "APr", "APc", "APf"}, "segm": {"AP", "APr", "APc", "APf"}}),
    "semseg": (lazy_config("Cityscapes-SemanticSegmentation", "semantic_{name}_{neck}_40k", "efficientformer_v2", "s2"),
               "cityscapes", "cityscapes_demo_sem_seg", {"sem_seg": {"mIoU", "fwIoU", "mACC", "pACC"}}),
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The three demo sets, 4 training and 2 validation images each, 64 pixels high."""
    root = tmp_path_factory.mktemp("d2lazy_datasets")
    for kind, folder in DEMO.items():
        width = 128 if kind == "cityscapes" else 64
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "generate_demo_data.py"), "--dataset", kind,
                        "--out", str(root / folder), "--num-train", "4", "--num-val", "2", "--height", "64",
                        "--width", str(width)], check=True, capture_output=True, env={**os.environ, "PYTHONPATH": ROOT})
    return root


def overrides(task, output_dir):
    """The script's ``key=value`` overrides: the demo set, 2 iterations of 2 images at 64 pixels on the CPU, no
    data-loading workers, every detection kept (score threshold 0, so that the evaluator has predictions; R-CNN:
    50 proposals per image at test time; LVIS: 64 sampled RoIs per image, 20 detections)."""
    names = CASES[task][2]
    opts = [f"train.output_dir={output_dir}", "train.max_iter=2", "train.device=cpu",
            "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
            f"dataloader.train.dataset.names={names}_train", f"dataloader.test.dataset.names={names}_val",
            "dataloader.test.mapper.augmentations.0.short_edge_length=64"]
    if task == "semseg":  # augmentations: crop, resize, flip
        opts += ["dataloader.train.mapper.augmentations.0.crop_size=[48,96]",
                 "dataloader.train.mapper.augmentations.1.short_edge_length=[64]",
                 "dataloader.train.mapper.augmentations.1.max_size=128",
                 "dataloader.test.mapper.augmentations.0.max_size=128"]
    else:  # resize, flip
        opts += ["dataloader.train.mapper.augmentations.0.short_edge_length=[64]",
                 "dataloader.train.mapper.augmentations.0.max_size=64",
                 "dataloader.test.mapper.augmentations.0.max_size=64"]
    if task == "retinanet":
        opts.append("model.test_score_thresh=0.0")
    elif task == "mask_rcnn":
        opts += ["model.proposal_generator.post_nms_topk=[1000,50]",
                 "model.roi_heads.box_predictor.test_score_thresh=0.0"]
    elif task == "lvis":  # (score threshold 1e-4 already) masks of 1203 classes per RoI: fewer RoIs and detections
        opts += ["model.proposal_generator.post_nms_topk=[1000,50]", "model.roi_heads.batch_size_per_image=64",
                 "model.roi_heads.box_predictor.test_topk_per_image=20"]
    return opts


def lazyconfig_train_net(config, *args, datasets):
    """Detectron2's tools/lazyconfig_train_net.py, run as Detectron2 documents it; its output."""
    env = {**os.environ, "PYTHONPATH": ROOT, "DETECTRON2_DATASETS": str(datasets)}
    r = subprocess.run([sys.executable, os.path.join(detectron2_tools_dir(), "lazyconfig_train_net.py"),
                        "--config-file", config, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    return out


def check_optimizer(saved, cfg, model):
    """The optimiser state saved with the checkpoint is torch's AdamW with the LazyConfig's betas and learning rate,
    and has the parameter groups (weight decays, sizes) the LazyConfig's optimizer builds for this model."""
    optimizer = saved["trainer"]["optimizer"]  # SimpleTrainer's state
    expected = instantiate({**cfg.optimizer, "params": {**cfg.optimizer.params, "model": model}})
    assert type(expected) is torch.optim.AdamW
    groups = optimizer["param_groups"]
    assert all(g["decoupled_weight_decay"] is True for g in groups), groups  # AdamW, not Adam or SGD
    assert {tuple(g["betas"]) for g in groups} == {tuple(cfg.optimizer.betas)} == {(0.9, 0.999)}
    assert {g["initial_lr"] for g in groups} == {cfg.optimizer.lr}
    assert sorted((g["weight_decay"], len(g["params"])) for g in groups) == \
        sorted((g["weight_decay"], len(g["params"])) for g in expected.param_groups)
    state = optimizer["state"]
    assert len(state) == sum(len(g["params"]) for g in groups)  # every parameter took a step
    assert all({"exp_avg", "exp_avg_sq"} <= set(s) and int(s["step"]) == 2 for s in state.values())


def train_and_check(task, datasets, out):
    config, _, _, metrics = CASES[task]
    log = lazyconfig_train_net(config, *overrides(task, out), datasets=datasets)
    # the evaluator's metrics, evaluated after the last iteration
    res = detectron2_results(log)
    assert set(res) == set(metrics), log[-3000:]
    for kind, names in metrics.items():
        # (None: no object of that kind; LVIS says -100 for no object of that size)
        assert names <= set(res[kind]) and all(v in (None, -100.0) or 0 <= v <= 100 for v in res[kind].values()), res
        assert all(res[kind][n] is not None and res[kind][n] >= 0 for n in names), res
    # the checkpoint: the LazyConfig's model after the 2 iterations, with the optimiser's state
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    saved = load_d2_checkpoint(str(out / "model_final.pth"))
    cfg = LazyConfig.load(config)
    model = instantiate(cfg.model)
    assert saved["iteration"] == 1 and saved["model"].keys() == model.state_dict().keys()
    check_optimizer(saved, cfg, model)
    logged = [json.loads(line) for line in open(out / "metrics.json")]
    losses = [m for m in logged if "total_loss" in m]
    assert losses[-1]["iteration"] == 1 and torch.isfinite(torch.tensor(losses[-1]["total_loss"]))
    # the config as the script saved it (with the overrides) loads back
    saved_cfg = LazyConfig.load(str(out / "config.yaml"))
    assert saved_cfg.train.max_iter == 2 and saved_cfg.dataloader.train.dataset.names.endswith("_train")
    return res, log


def test_mask_rcnn_coco_train_eval_and_eval_only(datasets, tmp_path):
    trained, _ = train_and_check("mask_rcnn", datasets, tmp_path / "train")
    config = CASES["mask_rcnn"][0]
    log = lazyconfig_train_net(config, "--eval-only", f"train.init_checkpoint={tmp_path / 'train' / 'model_final.pth'}",
                               *overrides("mask_rcnn", tmp_path / "eval"), datasets=datasets)
    assert detectron2_results(log) == trained
    assert "model_final.pth" in log


def test_retinanet_coco(datasets, tmp_path):
    train_and_check("retinanet", datasets, tmp_path)


def test_lvis_mask_rcnn(datasets, tmp_path):
    _, log = train_and_check("lvis", datasets, tmp_path)
    assert "lvis_evaluation" in log


def test_cityscapes_semantic_fpn(datasets, tmp_path):
    res, log = train_and_check("semseg", datasets, tmp_path)
    assert "sem_seg_evaluation" in log and res["sem_seg"]["pACC"] > 0
