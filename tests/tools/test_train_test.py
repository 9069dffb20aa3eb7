"""tools/train.py and tools/test.py end to end (subprocesses), on a few generated demo images, on the CPU.

Two training runs are shared by the tests through module-scoped fixtures: a short one (4 iterations, checkpoints
at 2 and 4, validation at 4), which the resume test continues to 6 iterations, and an uninterrupted one
(LONG_ITERS iterations, checkpoints every 6) whose 6th-iteration checkpoint the resumed run must equal and whose
final model tools/test.py evaluates (mIoU above the best constant prediction). The other tests check the early,
clear failures.
"""
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import mmcv.ops  # noqa: F401  (required: the suite needs mmcv with its compiled ops)
import mmseg  # noqa: F401
import numpy as np
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIG = osp.join(ROOT, "configs", "demo",
                       "efficientvit-seghead_efficientvit-b0_1xb4-500iter_cityscapes-demo-128x256.py")
CITYSCAPES_CONFIG = osp.join(ROOT, "configs", "efficientvit_cityscapes.py")
TRAIN = osp.join(ROOT, "tools", "train.py")
TEST = osp.join(ROOT, "tools", "test.py")
NUM_VAL = 4
LONG_ITERS = 24  # enough for the demo model to beat the best constant prediction (mIoU 9.3 vs 2.6 at seed 0)


def run(args, cwd, timeout=300, **env_vars):
    # one thread: identical numerics in every run, and no OpenMP slow-down when the machine is shared
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **env_vars)
    r = subprocess.run([sys.executable] + [str(a) for a in args], cwd=str(cwd), env=env, capture_output=True,
                       text=True, timeout=timeout)
    r.output = r.stdout + r.stderr
    return r


def data_options(data_root):
    root = str(data_root) + "/"
    return [f"train_dataloader.dataset.data_root={root}", f"val_dataloader.dataset.data_root={root}",
            f"test_dataloader.dataset.data_root={root}"]


def small_run_options(data_root, max_iters, checkpoint_interval=2):
    """The demo config (its schedule, seed 0, random augmentation) at batch 2 for max_iters, validation at the end."""
    return data_options(data_root) + [
        f"train_cfg.max_iters={max_iters}", f"train_cfg.val_interval={max_iters}", "train_dataloader.batch_size=2",
        f"default_hooks.checkpoint.interval={checkpoint_interval}", "default_hooks.checkpoint.max_keep_ckpts=5",
        "default_hooks.logger.interval=1"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from effvit_plugins.datasets import generate_cityscapes_demo

    out = tmp_path_factory.mktemp("cityscapes_demo")
    generate_cityscapes_demo(str(out), num_train=6, num_val=NUM_VAL, seed=0, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    """tools/train.py for 4 iterations: (work_dir, completed process)."""
    work = tmp_path_factory.mktemp("work")
    r = run([TRAIN, DEMO_CONFIG, "--work-dir", work, "--cfg-options"] + small_run_options(demo_data, 4), cwd=work)
    return work, r


@pytest.fixture(scope="module")
def trained_long(demo_data, tmp_path_factory):
    """tools/train.py for LONG_ITERS iterations, uninterrupted, checkpoints every 6: (work_dir, process)."""
    work = tmp_path_factory.mktemp("work_long")
    r = run([TRAIN, DEMO_CONFIG, "--work-dir", work, "--cfg-options"]
            + small_run_options(demo_data, LONG_ITERS, checkpoint_interval=6), cwd=work)
    assert r.returncode == 0, r.output[-5000:]
    return work, r


def chance_miou(data_root) -> float:
    """mIoU (%) of the best constant prediction on the val labels: the most frequent class everywhere gets
    IoU = its pixel share, every other class present gets 0 (mmseg's IoUMetric averages over present classes)."""
    from PIL import Image

    counts = np.zeros(256, np.int64)
    for f in glob.glob(str(data_root / "gtFine" / "val" / "*" / "*_gtFine_labelTrainIds.png")):
        counts += np.bincount(np.asarray(Image.open(f)).ravel(), minlength=256)
    counts = counts[:255]  # 255 = ignore
    assert counts.sum() > 0
    return 100.0 * counts.max() / counts.sum() / np.count_nonzero(counts)


def final_val_metrics(work):
    """The last validation entry of the run's scalars.json (mmengine's LocalVisBackend)."""
    (scalars,) = glob.glob(str(work / "*" / "vis_data" / "scalars.json"))
    entries = [json.loads(line) for line in open(scalars)]
    return [e for e in entries if "mIoU" in e][-1]


def test_train_runs_and_saves_checkpoints(trained):
    work, r = trained
    assert r.returncode == 0, r.output[-5000:]
    assert "Iter(train) [4/4]" in r.output
    assert re.search(r"Iter\(val\) \[\d+/\d+\].*mIoU", r.output)  # validation at the end
    assert osp.isfile(work / "iter_2.pth") and osp.isfile(work / "iter_4.pth")
    assert (work / "last_checkpoint").read_text().strip().endswith("iter_4.pth")
    assert glob.glob(str(work / "*" / "*.log"))


def test_tiny_training_beats_chance_and_test_reproduces_it(trained_long, demo_data, tmp_path):
    """After LONG_ITERS iterations the validation mIoU is above the best constant prediction, and tools/test.py
    on the final checkpoint reports the same mIoU, writes the overlays and the label maps."""
    work, _ = trained_long
    val = final_val_metrics(work)
    chance = chance_miou(demo_data)
    assert val["step"] == LONG_ITERS and val["mIoU"] > 2 * chance, (val, chance)
    show_dir, out_dir = tmp_path / "overlays", tmp_path / "preds"
    # the runner checkpoint holds HistoryBuffer / numpy objects: plain weights_only loading refuses it, ours not
    t = run([TEST, DEMO_CONFIG, work / f"iter_{LONG_ITERS}.pth", "--work-dir", tmp_path / "test_work", "--show-dir",
             show_dir, "--out", out_dir, "--cfg-options"] + data_options(demo_data), cwd=tmp_path)
    assert t.returncode == 0, t.output[-5000:]
    m = re.search(r"^mIoU: (\d+\.\d\d)$", t.stdout, re.M)
    assert m, t.stdout[-2000:]
    assert float(m.group(1)) == round(val["mIoU"], 2)
    overlays = glob.glob(str(show_dir / "test_*_leftImg8bit.png_0.png"))
    assert len(overlays) == NUM_VAL, os.listdir(show_dir) if osp.isdir(show_dir) else "no show dir"
    assert f"Overlay images (ground truth | prediction): {NUM_VAL} in {show_dir}" in t.stdout
    from PIL import Image

    w, h = Image.open(overlays[0]).size
    assert (h, w) == (128, 512)  # ground truth | prediction side by side at the image size
    assert len(glob.glob(str(out_dir / "*.png"))) == NUM_VAL
    assert "Traceback" not in t.output


def train_losses(work) -> dict:
    """{iteration: logged total loss} of a run's scalars.json (logger interval 1)."""
    (scalars,) = glob.glob(str(work / "*" / "vis_data" / "scalars.json"))
    entries = [json.loads(line) for line in open(scalars)]
    return {e["step"]: e["loss"] for e in entries if "loss" in e}


def test_compile_true_gives_the_same_losses(trained, demo_data, tmp_path):
    """``compile`` in the config (mmengine compiles ``train_step``; here ``--cfg-options compile.backend=aot_eager``,
    the cheap backend: dynamo capture and AOT autograd without code generation) trains with the losses of the eager
    run: the first 2 iterations of the shared 4-iteration run (same seed, data and schedule). The demo config has a
    ``paramwise_cfg``, whose ConfigDict parameter groups dynamo could not trace without our compat repair."""
    work = tmp_path / "compiled"
    r = run([TRAIN, DEMO_CONFIG, "--work-dir", work, "--cfg-options"] + data_options(demo_data) + [
        "train_cfg.max_iters=2", "train_cfg.val_interval=1000", "train_dataloader.batch_size=2",
        "default_hooks.checkpoint.interval=1000", "default_hooks.logger.interval=1", "compile.backend=aot_eager"],
        cwd=tmp_path)
    assert r.returncode == 0, r.output[-5000:]
    assert 'Model has been "compiled"' in r.output
    eager, compiled = train_losses(trained[0]), train_losses(work)
    assert sorted(compiled) == [1, 2], compiled
    for step in (1, 2):
        assert compiled[step] == pytest.approx(eager[step], rel=1e-5), (step, compiled, eager)


def test_runner_checkpoint_needs_compat_loader(trained):
    work, r = trained
    assert r.returncode == 0
    ckpt = str(work / "iter_4.pth")
    with pytest.raises(Exception):
        torch.load(ckpt, weights_only=True)  # what mmengine 0.10.7 gets on torch >= 2.6 without our patch
    from effvit_plugins.mm.compat import load_runner_checkpoint

    state = load_runner_checkpoint(ckpt, map_location="cpu")
    assert state["meta"]["iter"] == 4 and "state_dict" in state


def assert_same_training_state(a, b):
    """Weights, optimizer state (moments, step counts, hyper-parameters), schedulers: bit-identical."""
    assert a["meta"]["iter"] == b["meta"]["iter"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    oa, ob = a["optimizer"], b["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]  # lr, betas, weight decay, param ids
    assert oa["state"].keys() == ob["state"].keys() and oa["state"]
    for i, state in oa["state"].items():
        assert state.keys() == ob["state"][i].keys()
        for k, v in state.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(ob["state"][i][k])), (i, k)
    assert a["param_schedulers"] == b["param_schedulers"]


def test_resume_equals_uninterrupted_run(trained, trained_long, demo_data, tmp_path):
    """The 4-iteration run resumed (--resume) to 6 ends exactly where the uninterrupted run was at 6: same
    weights, optimizer state and learning rate (random augmentation on, seed 0, CPU)."""
    from effvit_plugins.mm.compat import load_runner_checkpoint

    work, r = trained
    assert r.returncode == 0
    resumed = tmp_path / "resumed"
    shutil.copytree(work, resumed)
    (resumed / "last_checkpoint").write_text(str(resumed / "iter_4.pth"))
    t = run([TRAIN, DEMO_CONFIG, "--work-dir", resumed, "--resume", "--cfg-options"]
            + small_run_options(demo_data, 6), cwd=tmp_path)
    assert t.returncode == 0, t.output[-5000:]
    assert "Auto resumed from the latest checkpoint" in t.output and "iter_4.pth" in t.output
    assert "resumed epoch: 0, iter: 4" in t.output
    assert "Iter(train) [5/6]" in t.output and "Iter(train) [6/6]" in t.output
    assert "Iter(train) [1/6]" not in t.output
    got = load_runner_checkpoint(str(resumed / "iter_6.pth"))
    want = load_runner_checkpoint(str(trained_long[0] / "iter_6.pth"))
    assert got["optimizer"]["param_groups"][0]["lr"] > 0
    assert_same_training_state(got, want)


def _assert_clear_failure(r, *needles):
    assert r.returncode == 2, r.output[-3000:]
    assert "Traceback" not in r.output, r.output[-3000:]
    for n in needles:
        assert n in r.stderr, r.stderr


def test_train_missing_dataset_message(tmp_path):
    # cwd without data/: the config's data_root 'data/cityscapes/' does not exist there
    r = run([TRAIN, CITYSCAPES_CONFIG], cwd=tmp_path, timeout=120)
    _assert_clear_failure(r, "missing data_root 'data/cityscapes/'", "train_dataloader.dataset.data_root=",
                          "val_dataloader.dataset.data_root=", "ln -s", "tools/generate_demo_data.py", "make demo")
    assert r.stderr.count("error:") == 1
    assert not osp.exists(tmp_path / "work_dirs")  # nothing built


def test_test_missing_dataset_message(tmp_path):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"")
    r = run([TEST, CITYSCAPES_CONFIG, ckpt, "--cfg-options", "test_dataloader.dataset.data_root=nowhere/"],
            cwd=tmp_path, timeout=120)
    _assert_clear_failure(r, "missing data_root 'nowhere/'", "test_dataloader.dataset.data_root=")
    r = run([TEST, CITYSCAPES_CONFIG, tmp_path / "absent.pth"], cwd=tmp_path, timeout=120)
    _assert_clear_failure(r, "checkpoint file not found", "absent.pth")


def test_amp_without_gpu_is_a_clear_error(demo_data, tmp_path):
    # CUDA hidden: the machine without a GPU, also where there is one
    r = run([TRAIN, DEMO_CONFIG, "--amp", "--work-dir", tmp_path / "w", "--cfg-options"] + data_options(demo_data),
            cwd=tmp_path, timeout=120, CUDA_VISIBLE_DEVICES="")
    _assert_clear_failure(r, "--amp", "needs a GPU")


def test_data_check_descends_into_wrappers(tmp_path):
    from mmengine.config import Config

    from effvit_plugins.mm.data_check import find_missing_data

    (tmp_path / "a" / "img").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    cfg = Config(dict(
        train_dataloader=dict(dataset=dict(type="RepeatDataset", times=2, dataset=dict(
            type="ConcatDataset", datasets=[
                dict(type="CityscapesDataset", data_root=str(tmp_path / "a"),
                     data_prefix=dict(img_path="img", seg_map_path="ann")),
                dict(type="CocoDataset", data_root=str(tmp_path / "b"), ann_file="annotations/x.json",
                     data_prefix=dict(img="train2017/")),
                dict(type="CityscapesDataset", data_root="s3://bucket/cs",
                     data_prefix=dict(img_path="img", seg_map_path="ann")),
                dict(type="ADE20KDataset", data_root=str(tmp_path / "c"),
                     data_prefix=dict(img_path="images", seg_map_path="annotations"))])))))
    missing = find_missing_data(cfg, ["train_dataloader", "val_dataloader"])
    got = {(m.key, m.kind, osp.relpath(m.path, str(tmp_path))) for m in missing}
    assert got == {
        ("train_dataloader.dataset.dataset.datasets.0", "directory", osp.join("a", "ann")),
        ("train_dataloader.dataset.dataset.datasets.1", "file", osp.join("b", "annotations", "x.json")),
        ("train_dataloader.dataset.dataset.datasets.1", "directory", osp.join("b", "train2017")),
        ("train_dataloader.dataset.dataset.datasets.3", "directory", "c"),  # a missing data_root alone
    }
    assert [m.data_root for m in missing][-1] == str(tmp_path / "c")
