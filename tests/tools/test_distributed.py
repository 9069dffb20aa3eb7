"""Distributed training through tools/train.py on CPUs: torchrun, 2 processes, gloo.

With every BatchNorm in eval mode, plain SGD, no clipping and a constant learning rate, 2 steps of 2 processes
with batch 2 each must give the weights of 2 steps of 1 process with batch 4 on the same images: DDP averages
the gradients of the per-process mean losses, which is the gradient of the mean loss over the 4 images (all images
have the same size and the loss is averaged over all pixels). The data is made identical in both set-ups: a fixed
resize instead of random resize/crop/flip, and the sampler without shuffling (InfiniteSampler deals the indices
0, 1, 2, 3 ... round-robin to the processes, so the two per-process batches together are the 1-process batch).
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from effvit_plugins.datasets import generate_cityscapes_demo

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))
DEMO_CONFIG = osp.join(ROOT, "configs", "demo",
                       "efficientvit-seghead_efficientvit-b0_1xb4-500iter_cityscapes-demo-128x256.py")
TRAIN = osp.join(ROOT, "tools", "train.py")

DERIVED = """
_base_ = [{base!r}]
custom_imports = dict(imports=['effvit_plugins', 'effvit_test_hooks'], allow_failed_imports=False)
custom_hooks = [dict(type='EvalModeNormsHook'), dict(type='SaveRankWeightsHook')]
# deterministic data: a fixed resize (no random resize/crop/flip), the sampler's order
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(sampler=dict(shuffle=False), dataset=dict(pipeline=train_pipeline))
model = dict(data_preprocessor=dict(size=(64, 128)))
# SGD with a constant lr and no clipping: the update is proportional to the gradient (Adam's is scale-free)
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9))
param_scheduler = []
val_cfg = None
val_dataloader = None
val_evaluator = None
"""


def options(data, batch_size):
    return ["--cfg-options", f"train_dataloader.dataset.data_root={data}/", "train_cfg.max_iters=2",
            f"train_dataloader.batch_size={batch_size}", "default_hooks.logger.interval=1"]


def test_two_processes_equal_one_process_with_twice_the_batch(tmp_path, load_tool, monkeypatch):
    data = tmp_path / "data"
    generate_cityscapes_demo(str(data), num_train=8, num_val=1, seed=0, log=lambda *a: None)
    cfg = tmp_path / "dist_check.py"
    cfg.write_text(DERIVED.format(base=DEMO_CONFIG))
    one, two = tmp_path / "one", tmp_path / "two"
    # torchrun, 2 processes, batch 2 each; CUDA hidden: the CPU path is what is tested, also on a GPU machine
    pythonpath = os.pathsep.join([ROOT, HERE] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=pythonpath)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", TRAIN, cfg,
           "--launcher", "pytorch", "--work-dir", two] + options(data, 2) + ["env_cfg.dist_cfg.backend=gloo"]
    r = subprocess.run([str(c) for c in cmd], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    assert "Iter(train) [2/2]" in out and "Distributed training is not used" not in out
    # one process, batch 4: tools/train.py in this process
    monkeypatch.syspath_prepend(HERE)
    load_tool("train").main([str(cfg), "--work-dir", str(one)] + options(data, 4))

    def load(work, rank, tag):
        return torch.load(work / f"weights_rank{rank}_{tag}.pth", weights_only=True)

    start, single = load(one, 0, "start"), load(one, 0, "end")
    rank0, rank1 = load(two, 0, "end"), load(two, 1, "end")
    assert rank0.keys() == rank1.keys() == single.keys()
    # both processes hold the same model, bit for bit
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # the same start and the same two steps as one process with the whole batch
    assert all(torch.equal(load(two, 0, "start")[k], start[k]) for k in start)
    params = [k for k in single if single[k].is_floating_point() and "running_" not in k]
    moved = max((single[k] - start[k]).abs().max().item() for k in params)
    diff = max((rank0[k] - single[k]).abs().max().item() for k in params)
    assert moved > 1e-2, moved  # the steps are large against the tolerance: a wrong gradient scale would show
    assert diff < 1e-5, diff
    # eval-mode BN: running statistics untouched in both set-ups
    stats = [k for k in single if "running_" in k]
    assert stats and all(torch.equal(rank0[k], start[k]) and torch.equal(single[k], start[k]) for k in stats)


def test_nccl_without_gpu_is_one_clear_error(tmp_path, load_tool, monkeypatch, capsys):
    """The configs' default backend is nccl; without a GPU the user is told to switch to gloo."""
    import torch.distributed as dist

    for k, v in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29511").items():
        monkeypatch.setenv(k, v)  # what torchrun sets
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine without its GPU, if it has one
    data = tmp_path / "data"  # a dataset, so that nothing else stops the run
    generate_cityscapes_demo(str(data), num_train=1, num_val=1, seed=0, log=lambda *a: None)
    with pytest.raises(SystemExit) as e:
        load_tool("train").main([DEMO_CONFIG, "--launcher", "pytorch", "--work-dir", str(tmp_path / "w"),
                                 "--cfg-options", f"train_dataloader.dataset.data_root={data}/",
                                 f"val_dataloader.dataset.data_root={data}/"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("error:") == 1, err
    assert "env_cfg.dist_cfg.backend='nccl' needs a GPU" in err
    assert "--cfg-options env_cfg.dist_cfg.backend=gloo" in err
    assert not dist.is_initialized() and not osp.exists(tmp_path / "w")
