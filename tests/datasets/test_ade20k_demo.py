"""The synthetic ADE20K-layout demo dataset: layout, labels, sizes, determinism, idempotency, mmseg reads it."""
import glob
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from effvit_plugins.datasets import generate_ade20k_demo
from effvit_plugins.datasets.ade20k_demo import (MARKER, ROOT_NAME, STREET_TO_ADE, USED_LABELS, is_complete,
                                                 render_ade_scene)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _gen(out, **kw):
    kw.setdefault("num_train", 5)
    kw.setdefault("num_val", 3)
    kw.setdefault("log", lambda *a: None)
    return generate_ade20k_demo(str(out), **kw)


def _arrays(root):
    files = sorted(glob.glob(osp.join(str(root), ROOT_NAME, "*", "*", "*.*")))
    return {osp.relpath(f, str(root)): np.asarray(Image.open(f)) for f in files}


def test_layout_labels_and_sizes(tmp_path):
    summary = _gen(tmp_path)
    root = osp.join(str(tmp_path), ROOT_NAME)
    assert summary["generated"] and summary["data_root"] == root
    sizes, labels = set(), set()
    for folder, tag, num in (("training", "train", 5), ("validation", "val", 3)):
        imgs = sorted(glob.glob(osp.join(root, "images", folder, "*")))
        anns = sorted(glob.glob(osp.join(root, "annotations", folder, "*")))
        assert [osp.basename(p) for p in imgs] == [f"ADE_{tag}_{i:08d}.jpg" for i in range(1, num + 1)]
        assert [osp.basename(p) for p in anns] == [f"ADE_{tag}_{i:08d}.png" for i in range(1, num + 1)]
        for ip, ap in zip(imgs, anns):
            img, ann = Image.open(ip), Image.open(ap)
            assert img.format == "JPEG" and img.mode == "RGB" and ann.mode == "L"
            assert img.size == ann.size
            sizes.add(img.size)
            a = np.asarray(ann)
            assert len(set(np.unique(a).tolist()) - {0}) >= 4  # a scene, not a blank image
            labels |= set(np.unique(a).tolist())
    assert len(sizes) == 8  # every image has its own size, as in ADE20K
    assert all(0.75 * 160 - 1 <= w <= 1.25 * 160 + 1 and 0.75 * 128 - 1 <= h <= 1.25 * 128 + 1 for w, h in sizes)
    assert labels <= {0} | set(USED_LABELS) and 0 in labels and {2, 3, 7, 12, 21} <= labels


def test_label_values_are_the_ade20k_classes():
    from mmseg.datasets import ADE20KDataset

    classes = ADE20KDataset.METAINFO["classes"]
    assert len(classes) == 150
    for name, label in STREET_TO_ADE.values():  # label k is mmseg class k - 1 after reduce_zero_label
        assert classes[label - 1].strip() == name


def test_deterministic_and_idempotent(tmp_path):
    _gen(tmp_path / "a", seed=3)
    _gen(tmp_path / "b", seed=3)
    _gen(tmp_path / "c", seed=4)
    a, b, c = (_arrays(tmp_path / x) for x in "abc")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(a[k].shape == c[k].shape and np.array_equal(a[k], c[k]) for k in a)
    img, ann = render_ade_scene(np.random.default_rng(1), 64, 80, size_jitter=0.0)
    assert img.shape == (64, 80, 3) and ann.shape == (64, 80)
    out = tmp_path / "a"
    assert is_complete(str(out), num_train=5, num_val=3, seed=3)
    assert not _gen(out, seed=3)["generated"]  # complete with the same parameters: skipped
    assert _gen(out, seed=3, num_train=2, num_val=1)["generated"]  # other parameters: replaced, no stale files
    assert len(glob.glob(osp.join(str(out), ROOT_NAME, "*", "*", "*"))) == 6
    real = tmp_path / "real"  # a folder that may hold the real dataset (no marker of ours) is never written into
    (real / ROOT_NAME / "images").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="refusing"):
        _gen(real)
    assert not osp.exists(osp.join(str(real), ROOT_NAME, MARKER))


def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, osp.join(ROOT, "tools", "generate_demo_data.py"), "--dataset", "ade20k", "--out",
           str(out), "--num-train", "2", "--num-val", "1", "--height", "64", "--width", "96"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert is_complete(str(out), num_train=2, num_val=1, height=64, width=96)
    assert re.search(rf"data_root='{re.escape(str(out))}/{ROOT_NAME}/'", r.stdout), r.stdout
    r = subprocess.run(cmd + ["--no-label-ids"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "only applies to --dataset cityscapes" in r.stderr


def test_mmseg_ade20k_dataset_reads_it(tmp_path):
    from mmengine.registry import DefaultScope
    from mmseg.datasets import ADE20KDataset

    _gen(tmp_path, num_train=2, num_val=2)
    with DefaultScope.overwrite_default_scope("mmseg"):
        ds = ADE20KDataset(
            data_root=osp.join(str(tmp_path), ROOT_NAME),
            data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
            pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
                      dict(type="PackSegInputs")])
        assert len(ds) == 2
        item = ds[0]
    raw = np.asarray(Image.open(osp.join(str(tmp_path), ROOT_NAME, "annotations", "validation",
                                         "ADE_val_00000001.png")))
    seg = item["data_samples"].gt_sem_seg.data[0].numpy()
    assert seg.shape == raw.shape == tuple(item["inputs"].shape[-2:])
    assert (seg[raw == 0] == 255).all() and (seg[raw > 0] == raw[raw > 0] - 1).all()  # reduce_zero_label
