"""Detectron2 training through tools/train_net.py on 2 CPU processes (``--num-gpus 2``, gloo).

With frozen BatchNorm and no random part in data or model, 2 steps of 2 processes with 2 images each must give the
weights of 2 steps of 1 process with 4 images. ``SOLVER.IMS_PER_BATCH`` is the total batch in Detectron2, so both runs
use the same config (``IMS_PER_BATCH 4``) and differ only in ``--num-gpus``. How the set-ups are made identical:

* data: the same 8 images, order fixed by ``SEED``: Detectron2's ``TrainingSampler`` shuffles with ``cfg.SEED`` (the
  same permutation in every process and run) and deals the stream round-robin (process r reads items r, r + 2, ...),
  so without aspect-ratio grouping the two processes' batches of iteration i together are the 1-process batch of
  iteration i. No random augmentation: one fixed size (64x128, a multiple of 32, so no padding), no flip, no crop.
* the model: Semantic FPN (EfficientViT-MIT B0, the smallest variant) rather than a detector: its loss is the mean
  cross-entropy over all pixels, and with equal image sizes and no ignored pixel (the demo's ignore label, the ego
  vehicle's bonnet, is relabelled road here) the mean over 4 images is the average of the two 2-image means, which
  is what DDP's gradient averaging computes. A detector could not be compared exactly: the RPN / ROI heads sample
  anchors and proposals with the global RNG (seeded ``SEED + rank`` by ``default_setup``), and their losses are
  normalised by per-batch counts (RetinaNet's by a running mean of them).
* BatchNorm in eval mode (``MODEL.EFFVIT.NORM_EVAL``; the FPN has no norm, the head GroupNorm, which is per image),
  drop path 0; start weights: initialised with ``SEED`` in process 0 and the 1-process run, and broadcast by DDP.
* AdamW (the configs' optimiser), constant learning rate, no clipping. AdamW's first steps are nearly
  scale-free, so a wrong gradient scale would hardly show; what this compares is the data split, the gradient
  averaging and the ranks staying in step.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from effvit_plugins.datasets import generate_cityscapes_demo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(ROOT, "configs", "detectron2", "demo",
                      "semantic_efficientvit_mit_b1_fpn_40k_cityscapes_demo_sem_seg.yaml")
OPTS = ["MODEL.DEVICE", "cpu", "MODEL.EFFVIT.ARCH", "b0", "MODEL.EFFVIT.NORM_EVAL", "True",
        "MODEL.EFFVIT.DROP_PATH_RATE", "0.0", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.RANDOM_FLIP", "none", "INPUT.CROP.ENABLED", "False", "DATALOADER.ASPECT_RATIO_GROUPING", "False",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "2", "SOLVER.BASE_LR", "0.001",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.POLY_LR_POWER", "0.0", "SOLVER.CHECKPOINT_PERIOD", "100",
        "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0", "SEED", "0"]


def train(datasets, out, num_gpus, *opts):
    env = dict(os.environ, PYTHONPATH=ROOT, DETECTRON2_DATASETS=str(datasets), CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, os.path.join(HERE, "train_net_rank_weights.py"), "--config-file", CONFIG,
           "--num-gpus", str(num_gpus), "--dist-url", "auto", *OPTS, *opts, "OUTPUT_DIR", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-5000:]
    return log


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The demo data (every pixel labelled) and the 1-process run: (datasets folder, output folder)."""
    tmp = tmp_path_factory.mktemp("d2_train")
    datasets = tmp / "datasets"
    generate_cityscapes_demo(str(datasets / "cityscapes_demo"), num_train=8, num_val=1, seed=0, log=lambda *a: None)
    for label in (datasets / "cityscapes_demo" / "gtFine").rglob("*_labelTrainIds.png"):
        a = np.array(Image.open(label))
        Image.fromarray(np.where(a == 255, 0, a).astype(np.uint8)).save(label)  # every pixel counts in the loss
    train(datasets, tmp / "one", 1)
    return datasets, tmp / "one"


def test_two_processes_equal_one_process_with_the_same_total_batch(one_process, tmp_path):
    datasets, one = one_process
    log = train(datasets, tmp_path / "two", 2)
    assert "World size: 2" in log, log[-3000:]

    def load(run, rank, tag):
        folder = one if run == "one" else tmp_path / run
        return torch.load(folder / f"weights_rank{rank}_{tag}.pth", weights_only=True)

    start, single = load("one", 0, "start"), load("one", 0, "end")
    rank0, rank1 = load("two", 0, "end"), load("two", 1, "end")
    assert rank0.keys() == rank1.keys() == single.keys()
    # both processes start from process 0's weights (DDP's broadcast), which are the 1-process run's
    assert all(torch.equal(load("two", r, "start")[k], start[k]) for r in (0, 1) for k in start)
    # and end bit for bit equal
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    params = [k for k in single if single[k].is_floating_point() and "running_" not in k]
    moved = max((single[k] - start[k]).abs().max().item() for k in params)
    diff = max((rank0[k] - single[k]).abs().max().item() for k in params)
    print(f"max weight change {moved:.3g}; max difference 2 processes vs 1: {diff:.3g}")
    assert moved > 1e-3, moved  # 2 AdamW steps of lr 1e-3 move weights by ~2e-3: far above the tolerance
    assert diff < 1e-5, diff
    # frozen BatchNorm: running statistics untouched in both set-ups
    stats = [k for k in single if "running_" in k]
    assert stats and all(torch.equal(rank0[k], start[k]) and torch.equal(single[k], start[k]) for k in stats)


def test_solver_compile_trains_as_eager(one_process, tmp_path):
    """``SOLVER.COMPILE.ENABLED`` (backbone compiled, here with the ``aot_eager`` backend: dynamo capture and AOT
    autograd without code generation) trains to the weights of the eager 1-process run, and the checkpoint keys are
    the usual ones (the backbone is compiled in place)."""
    datasets, one = one_process
    log = train(datasets, tmp_path / "compiled", 1, "SOLVER.COMPILE.ENABLED", "True", "SOLVER.COMPILE.BACKEND",
                "aot_eager")
    assert "torch.compile: FPN compiled with backend 'aot_eager'" in log, log[-3000:]
    eager = torch.load(one / "weights_rank0_end.pth", weights_only=True)
    start = torch.load(one / "weights_rank0_start.pth", weights_only=True)
    compiled = torch.load(tmp_path / "compiled" / "weights_rank0_end.pth", weights_only=True)
    assert compiled.keys() == eager.keys()
    params = [k for k in eager if eager[k].is_floating_point()]
    moved = max((eager[k] - start[k]).abs().max().item() for k in params)
    diff = max((compiled[k] - eager[k]).abs().max().item() for k in params)
    print(f"max weight change {moved:.3g}; max difference compiled vs eager: {diff:.3g}")
    assert moved > 1e-3 and diff < 1e-5, (moved, diff)


def test_gpu_count_and_cpu_processes_on_a_gpu_machine(load_tool, monkeypatch, capsys):
    """What train_net.py decides before launching, on a (pretended) machine with 1 GPU: --num-gpus 2 for a CUDA model
    stops with the fix; --num-gpus 2 with MODEL.DEVICE cpu hides the GPUs from the processes it spawns (Detectron2's
    launch would give them NCCL, which cannot reduce CPU tensors)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    train_net = load_tool("train_net")
    argv = ["--config-file", CONFIG, "--num-gpus", "2", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
    with pytest.raises(SystemExit) as e:
        train_net.check_before_launch(train_net.default_argument_parser().parse_args(argv))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--num-gpus 2 but this machine has 1 GPU(s)" in err and "MODEL.DEVICE cpu" in err
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    train_net.check_before_launch(train_net.default_argument_parser().parse_args(argv + ["MODEL.DEVICE", "cpu"]))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
