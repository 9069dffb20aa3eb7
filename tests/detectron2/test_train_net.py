"""tools/train_net.py (Detectron2's own training loop) on the generated demo sets: COCO Mask R-CNN trains (loss falls,
COCOEvaluator AP clearly above the untrained model's), --resume continues from the last checkpoint, --eval-only with
MODEL.WEIGHTS reproduces the final evaluation; LVIS (LVISEvaluator) and Cityscapes semantic FPN (SemSegEvaluator) a
few iterations each; a missing dataset stops with where we looked and how to generate it."""
import json
import os
import re
import subprocess
import sys

import pytest

from effvit_plugins.testing import detectron2_results

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "configs", "detectron2", "demo")


def train_net(datasets, *args, expect_rc=0):
    env = {**os.environ, "PYTHONPATH": ROOT, "DETECTRON2_DATASETS": str(datasets)}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_net.py"), *map(str, args)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == expect_rc, out[-4000:]
    return out


results = detectron2_results  # {task: {metric: value}} from Detectron2's 'copypaste:' lines


def generate(tmp_path_factory, kind, folder):
    root = tmp_path_factory.getbasetemp() / "d2_datasets"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "generate_demo_data.py"), "--dataset", kind,
                    "--out", str(root / folder)], check=True, capture_output=True, env={**os.environ,
                                                                                         "PYTHONPATH": ROOT})
    return root


def test_coco_train_resume_eval(tmp_path_factory):
    datasets = generate(tmp_path_factory, "coco", "coco_demo")
    out = tmp_path_factory.mktemp("coco_out")
    cfg = os.path.join(DEMO, "mask_rcnn_efficientvit_mit_b1_fpn_1x_coco_demo.yaml")
    log = train_net(datasets, "--config-file", cfg, "OUTPUT_DIR", out)
    assert "COCOEvaluator" in log or "coco_evaluation" in log
    trained = results(log)
    losses = [json.loads(line)["total_loss"] for line in open(out / "metrics.json") if "total_loss" in line]
    print("total_loss:", losses, "trained:", trained)
    assert len(losses) >= 3 and losses[-1] < 0.75 * losses[0], losses
    assert trained["bbox"]["AP"] > 5.0 and trained["segm"]["AP"] > 5.0, trained
    assert (out / "model_final.pth").is_file() and (out / "last_checkpoint").read_text().strip() == "model_final.pth"

    # --eval-only with MODEL.WEIGHTS: the same numbers as the evaluation at the end of training
    log = train_net(datasets, "--config-file", cfg, "--eval-only", "MODEL.WEIGHTS", out / "model_final.pth",
                    "OUTPUT_DIR", out / "eval")
    assert results(log) == trained
    # the untrained model (random initialisation) is far below
    log = train_net(datasets, "--config-file", cfg, "--eval-only", "OUTPUT_DIR", out / "untrained")
    untrained = results(log)
    print("untrained:", untrained)
    # (no detection above the score threshold: COCOEvaluator reports nan)
    assert (untrained["bbox"]["AP"] or 0.0) < trained["bbox"]["AP"] / 3, (untrained, trained)

    # --resume: continues from the last checkpoint (model, optimiser, scheduler, iteration) for 2 more iterations
    max_iter = int(re.search(r"MAX_ITER: (\d+)", open(cfg).read())[1])
    log = train_net(datasets, "--config-file", cfg, "--resume", "OUTPUT_DIR", out, "SOLVER.MAX_ITER", max_iter + 2,
                    "DATASETS.TEST", "()")
    assert f"Starting training from iteration {max_iter}" in log, log[-3000:]
    assert "Loading from" in log and "model_final.pth" in log


def test_lvis_few_iterations_and_lvis_evaluator(tmp_path_factory):
    datasets = generate(tmp_path_factory, "lvis", "lvis_v1_demo")
    out = tmp_path_factory.mktemp("lvis_out")
    log = train_net(datasets, "--config-file", os.path.join(DEMO, "mask_rcnn_efficientvit_mit_b1_fpn_1x_lvis_v1_demo.yaml"),
                    "OUTPUT_DIR", out)
    assert "RepeatFactorTrainingSampler" in log and "lvis_evaluation" in log, log[-3000:]
    res = results(log)
    assert set(res) == {"bbox", "segm"} and {"AP", "APr", "APc", "APf"} <= set(res["bbox"]), res


def test_cityscapes_semantic_fpn_and_semseg_evaluator(tmp_path_factory):
    datasets = generate(tmp_path_factory, "cityscapes", "cityscapes_demo")
    out = tmp_path_factory.mktemp("semseg_out")
    cfg = os.path.join(DEMO, "semantic_efficientvit_mit_b1_fpn_40k_cityscapes_demo_sem_seg.yaml")
    log = train_net(datasets, "--config-file", cfg, "OUTPUT_DIR", out)
    assert "sem_seg_evaluation" in log, log[-3000:]
    res = results(log)["sem_seg"]
    assert {"mIoU", "fwIoU", "mACC", "pACC"} <= set(res) and 0 < res["pACC"] <= 100, res


def test_missing_dataset_says_where_and_how(tmp_path):
    cfg = os.path.join(DEMO, "mask_rcnn_efficientvit_mit_b1_fpn_1x_coco_demo.yaml")
    log = train_net(tmp_path / "nowhere", "--config-file", cfg, expect_rc=2)
    assert str(tmp_path / "nowhere" / "coco_demo") in log
    assert "DETECTRON2_DATASETS" in log and "python tools/generate_demo_data.py --dataset coco" in log
    assert "Traceback" not in log
    # a builtin (real) dataset: its layout, and the demo set standing in for it
    from effvit_plugins.detectron2 import DatasetMissingError, check_datasets

    with pytest.raises(DatasetMissingError, match=r"(?s)coco_2017_val.*not found; looked for .*DETECTRON2_DATASETS"
                                                  r".*--dataset coco.*coco_demo_val"):
        check_datasets(["coco_2017_val"])
