"""The synthetic Cityscapes-layout demo dataset: layout, label ids, determinism, idempotency, mmseg can read it."""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import mmcv.ops  # noqa: F401  (required: mmcv with its compiled ops)
import mmseg.datasets as mmseg_datasets
import numpy as np
import pytest
from PIL import Image

from effvit_plugins.datasets.cityscapes_demo import (MARKER, TRAIN_CITIES, TRAINID_TO_LABELID, USED_CLASSES,
                                                     VAL_CITIES, generate_cityscapes_demo, is_complete,
                                                     render_scene)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NAME = re.compile(r"^(?P<city>[a-z]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")


def _quiet(*a, **k):
    pass


def _gen(out, **kw):
    kw.setdefault("num_train", 6)
    kw.setdefault("num_val", 3)
    kw.setdefault("log", _quiet)
    return generate_cityscapes_demo(str(out), **kw)


def _arrays(out):
    files = sorted(glob.glob(osp.join(str(out), "*", "*", "*", "*.png")))
    return {osp.relpath(f, str(out)): np.asarray(Image.open(f)) for f in files}


def test_layout_and_label_ids(tmp_path):
    summary = _gen(tmp_path, num_train=6, num_val=3)
    assert summary["generated"]
    for split, num, cities in (("train", 6, TRAIN_CITIES), ("val", 3, VAL_CITIES)):
        imgs = sorted(glob.glob(osp.join(str(tmp_path), "leftImg8bit", split, "*", "*_leftImg8bit.png")))
        assert len(imgs) == num
        assert {osp.basename(osp.dirname(p)) for p in imgs} == set(cities[:num])  # several cities
        for p in imgs:
            m = NAME.match(osp.basename(p))
            assert m and m["city"] == osp.basename(osp.dirname(p))
            stem = osp.basename(p)[:-len("_leftImg8bit.png")]
            gt_dir = osp.join(str(tmp_path), "gtFine", split, m["city"])
            img = np.asarray(Image.open(p))
            train_ids = Image.open(osp.join(gt_dir, f"{stem}_gtFine_labelTrainIds.png"))
            label_ids = np.asarray(Image.open(osp.join(gt_dir, f"{stem}_gtFine_labelIds.png")))
            assert img.shape == (128, 256, 3) and img.dtype == np.uint8
            assert train_ids.mode == "L"
            train_ids = np.asarray(train_ids)
            assert train_ids.shape == (128, 256) and train_ids.dtype == np.uint8
            values = set(np.unique(train_ids).tolist())
            assert values <= set(range(19)) | {255}
            assert len(values - {255}) >= 4  # a scene, not a blank image
            lut = {**dict(enumerate(TRAINID_TO_LABELID)), 255: 1}
            for v in values:
                assert (label_ids[train_ids == v] == lut[v]).all()
    # over the whole set: the classes we draw, and some ignore pixels (ego-vehicle bonnet)
    all_ids = np.concatenate([a.ravel() for k, a in _arrays(tmp_path).items() if "labelTrainIds" in k])
    present = set(np.unique(all_ids).tolist())
    assert 255 in present
    assert {0, 1, 2, 10, 13} <= present
    assert present - {255} <= set(USED_CLASSES)


def test_deterministic(tmp_path):
    _gen(tmp_path / "a", seed=3)
    _gen(tmp_path / "b", seed=3)
    _gen(tmp_path / "c", seed=4)
    _gen(tmp_path / "d", seed=3, num_train=2, num_val=1)
    a, b, c, d = (_arrays(tmp_path / x) for x in "abcd")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert a.keys() == c.keys() and not all(np.array_equal(a[k], c[k]) for k in a)
    # image i depends only on (seed, split, i), not on how many images are generated
    assert set(d) < set(a) and all(np.array_equal(a[k], d[k]) for k in d)
    r1, r2 = (render_scene(np.random.default_rng(7), 64, 96) for _ in range(2))
    assert r1[0].shape == (64, 96, 3) and all(np.array_equal(x, y) for x, y in zip(r1, r2))


def test_idempotent_and_safe(tmp_path):
    out = tmp_path / "demo"
    assert _gen(out)["generated"]
    assert is_complete(str(out), num_train=6, num_val=3)
    probe = next(iter(glob.glob(osp.join(str(out), "leftImg8bit", "train", "*", "*.png"))))
    mtime = os.stat(probe).st_mtime_ns
    assert not _gen(out)["generated"]  # complete with the same parameters: skipped
    assert os.stat(probe).st_mtime_ns == mtime
    os.remove(probe)  # incomplete -> regenerated
    assert _gen(out)["generated"] and osp.isfile(probe)
    assert _gen(out, num_train=2, num_val=1)["generated"]  # other parameters -> replaced, no stale files
    assert len(glob.glob(osp.join(str(out), "leftImg8bit", "*", "*", "*.png"))) == 3
    # a folder that looks like a real dataset (no marker of ours) is never written into
    real = tmp_path / "real"
    (real / "leftImg8bit").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        _gen(real)
    assert not osp.exists(osp.join(str(real), MARKER))


def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, osp.join(ROOT, "tools", "generate_demo_data.py"), "--out", str(out), "--num-train", "3",
           "--num-val", "2", "--seed", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert is_complete(str(out), num_train=3, num_val=2, seed=1)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "skipping" in r.stdout


def test_mmseg_cityscapes_dataset_reads_it(tmp_path):
    from mmengine.registry import DefaultScope

    _gen(tmp_path, num_train=4, num_val=2)
    with DefaultScope.overwrite_default_scope("mmseg"):
        ds = mmseg_datasets.CityscapesDataset(
            data_root=str(tmp_path), data_prefix=dict(img_path="leftImg8bit/val", seg_map_path="gtFine/val"),
            pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")])
        assert len(ds) == 2
        item = ds[0]
    assert tuple(item["inputs"].shape) == (3, 128, 256)
    seg = item["data_samples"].gt_sem_seg.data
    assert seg.shape[-2:] == (128, 256) and int(seg[seg != 255].max()) <= 18
