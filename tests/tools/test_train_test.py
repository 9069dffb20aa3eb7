"""tools/train.py and tools/test.py end to end (subprocesses), on a few generated demo images, on the CPU.

One tiny training run (4 iterations, checkpoints at 2 and 4, validation at 4) is shared by the tests through a
module-scoped fixture; the other tests evaluate / resume from it or check the early, clear failures.
"""
import glob
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("mmcv.ops")
pytest.importorskip("mmseg")

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIG = osp.join(ROOT, "configs", "demo",
                       "efficientvit-seghead_efficientvit-b0_1xb4-500iter_cityscapes-demo-128x256.py")
CITYSCAPES_CONFIG = osp.join(ROOT, "configs", "efficientvit_cityscapes.py")
TRAIN = osp.join(ROOT, "tools", "train.py")
TEST = osp.join(ROOT, "tools", "test.py")
NUM_VAL = 2


def run(args, cwd, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable] + [str(a) for a in args], cwd=str(cwd), env=env, capture_output=True,
                       text=True, timeout=timeout)
    r.output = r.stdout + r.stderr
    return r


def data_options(data_root):
    root = str(data_root) + "/"
    return [f"train_dataloader.dataset.data_root={root}", f"val_dataloader.dataset.data_root={root}",
            f"test_dataloader.dataset.data_root={root}"]


def small_run_options(data_root, max_iters):
    return data_options(data_root) + [
        f"train_cfg.max_iters={max_iters}", f"train_cfg.val_interval={max_iters}", "train_dataloader.batch_size=2",
        "default_hooks.checkpoint.interval=2", "default_hooks.checkpoint.max_keep_ckpts=5",
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


def test_train_runs_and_saves_checkpoints(trained):
    work, r = trained
    assert r.returncode == 0, r.output[-5000:]
    assert "Iter(train) [4/4]" in r.output
    assert re.search(r"Iter\(val\) \[\d+/\d+\].*mIoU", r.output)  # validation at the end
    assert osp.isfile(work / "iter_2.pth") and osp.isfile(work / "iter_4.pth")
    assert (work / "last_checkpoint").read_text().strip().endswith("iter_4.pth")
    assert glob.glob(str(work / "*" / "*.log"))


def test_test_evaluates_checkpoint_and_writes_overlays(trained, demo_data, tmp_path):
    work, r = trained
    assert r.returncode == 0, r.output[-3000:]
    show_dir, out_dir = tmp_path / "overlays", tmp_path / "preds"
    # the runner checkpoint holds HistoryBuffer / numpy objects: plain weights_only loading refuses it, ours not
    t = run([TEST, DEMO_CONFIG, work / "iter_4.pth", "--work-dir", tmp_path / "test_work", "--show-dir", show_dir,
             "--out", out_dir, "--cfg-options"] + data_options(demo_data), cwd=tmp_path)
    assert t.returncode == 0, t.output[-5000:]
    assert re.search(r"^mIoU: \d+\.\d\d$", t.stdout, re.M), t.stdout[-2000:]
    overlays = glob.glob(str(show_dir / "test_*_leftImg8bit.png_0.png"))
    assert len(overlays) == NUM_VAL, os.listdir(show_dir) if osp.isdir(show_dir) else "no show dir"
    assert f"Overlay images (ground truth | prediction): {NUM_VAL} in {show_dir}" in t.stdout
    from PIL import Image

    w, h = Image.open(overlays[0]).size
    assert (h, w) == (128, 512)  # ground truth | prediction side by side at the image size
    assert len(glob.glob(str(out_dir / "*.png"))) == NUM_VAL
    assert "Traceback" not in t.output


def test_runner_checkpoint_needs_compat_loader(trained):
    import torch

    work, r = trained
    assert r.returncode == 0
    ckpt = str(work / "iter_4.pth")
    with pytest.raises(Exception):
        torch.load(ckpt, weights_only=True)  # what mmengine 0.10.7 gets on torch >= 2.6 without our patch
    from effvit_plugins.mm.compat import load_runner_checkpoint

    state = load_runner_checkpoint(ckpt, map_location="cpu")
    assert state["meta"]["iter"] == 4 and "state_dict" in state


def test_resume_continues_from_last_checkpoint(trained, demo_data, tmp_path):
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
    assert osp.isfile(resumed / "iter_6.pth")


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
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is available: --amp would work here")
    r = run([TRAIN, DEMO_CONFIG, "--amp", "--work-dir", tmp_path / "w", "--cfg-options"] + data_options(demo_data),
            cwd=tmp_path, timeout=120)
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
