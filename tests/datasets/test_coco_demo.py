"""The generated COCO / LVIS v1 demo sets: real layouts and fields, exact boxes/masks, determinism, idempotency,
and that pycocotools, the LVIS API and mmdet's CocoDataset / LVISV1Dataset read them."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from effvit_plugins.datasets import generate_coco_demo, generate_lvis_demo
from effvit_plugins.datasets.coco_demo import (COCO_CATEGORIES, COCO_DEMO_CLASSES, LVIS_DEMO_CLASSES, MARKER, SHAPES,
                                               is_complete, lvis_v1_category_names)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _quiet(*a, **k):
    pass


def _load(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("coco"))
    return out, generate_coco_demo(out, num_train=6, num_val=3, seed=0, log=_quiet)


@pytest.fixture(scope="module")
def lvis(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("lvis"))
    return out, generate_lvis_demo(out, num_train=8, num_val=4, seed=0, log=_quiet)


def test_coco_layout_and_fields(coco):
    out, summary = coco
    assert summary["generated"] and summary["classes"] == COCO_DEMO_CLASSES
    for split, n in (("train", 6), ("val", 3)):
        data = _load(osp.join(out, "annotations", f"instances_{split}2017.json"))
        assert set(data) >= {"info", "licenses", "images", "annotations", "categories"}
        # all 80 COCO categories with their official (non-contiguous) ids
        assert [c["id"] for c in data["categories"]][:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
        assert len(data["categories"]) == 80 and data["categories"][-1] == dict(
            supercategory="indoor", id=90, name="toothbrush")
        names = {c["id"]: c["name"] for c in data["categories"]}
        assert len(data["images"]) == n
        for img in data["images"]:
            assert img["file_name"] == f"{img['id']:012d}.jpg"
            assert img["coco_url"].endswith(f"/{split}2017/{img['file_name']}")
            path = osp.join(out, f"{split}2017", img["file_name"])
            assert Image.open(path).size == (img["width"], img["height"]) == (128, 128)
        ids = [a["id"] for a in data["annotations"]]
        assert len(ids) == len(set(ids)) >= n
        assert {names[a["category_id"]] for a in data["annotations"]} <= set(COCO_DEMO_CLASSES)
        for a in data["annotations"]:
            assert a["iscrowd"] == 0 and len(a["segmentation"]) == 1 and len(a["segmentation"][0]) >= 6


def test_boxes_and_masks_are_exact(coco):
    """The box is the polygon's extent; the pixels inside the polygon have the class colour, a ring around not."""
    out, _ = coco
    data = _load(osp.join(out, "annotations", "instances_train2017.json"))
    by_name = {c["name"]: c["id"] for c in COCO_CATEGORIES}
    colour = {by_name[n]: np.asarray(SHAPES[i][1], float) for i, n in enumerate(COCO_DEMO_CLASSES)}
    files = {i["id"]: i["file_name"] for i in data["images"]}
    checked = 0
    for a in data["annotations"]:
        poly = np.asarray(a["segmentation"][0]).reshape(-1, 2)
        x, y, w, h = a["bbox"]
        assert np.allclose([poly[:, 0].min(), poly[:, 1].min(), np.ptp(poly[:, 0]), np.ptp(poly[:, 1])],
                           [x, y, w, h], atol=0.011)
        img = np.asarray(Image.open(osp.join(out, "train2017", files[a["image_id"]]))).astype(float)
        mask = Image.new("L", (128, 128), 0)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in poly], fill=1)
        inside = np.asarray(mask, bool)
        # erode by one pixel: JPEG blurs the edge
        core = inside & np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1)
        assert core.sum() > 0.5 * a["area"] and abs(inside.sum() - a["area"]) < 0.25 * a["area"] + 20
        mean_in = img[core].mean(0)
        # the class colour dominates inside (it is the largest channel, as in the base colour)
        assert np.argmax(mean_in) == np.argmax(colour[a["category_id"]])
        assert np.abs(mean_in - colour[a["category_id"]]).max() < 80
        checked += 1
    assert checked >= 6


def test_deterministic_idempotent_and_safe(tmp_path, coco):
    out, _ = coco
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    generate_coco_demo(a, num_train=3, num_val=2, seed=0, log=_quiet)
    generate_coco_demo(b, num_train=5, num_val=2, seed=0, log=_quiet)  # image i depends only on (seed, split, i)
    for rel in ("train2017/000000000001.jpg", "train2017/000000000003.jpg", "val2017/000100000002.jpg"):
        assert open(osp.join(a, rel), "rb").read() == open(osp.join(out, rel), "rb").read() \
            == open(osp.join(b, rel), "rb").read()
    assert is_complete(a, "coco", num_train=3, num_val=2)
    msgs = []
    assert not generate_coco_demo(a, num_train=3, num_val=2, seed=0, log=msgs.append)["generated"]
    assert "skipping" in msgs[0]
    other = generate_coco_demo(a, num_train=3, num_val=2, seed=1, log=_quiet)  # other seed: replaced
    assert other["generated"] and is_complete(a, "coco", num_train=3, num_val=2, seed=1)
    assert generate_coco_demo(a, num_train=3, num_val=2, seed=1, force=True, log=_quiet)["generated"]
    os.remove(osp.join(a, "val2017", "000100000001.jpg"))
    assert not is_complete(a, "coco", num_train=3, num_val=2, seed=1)
    # a folder that looks like a real dataset (no marker of ours) is never written into
    real = tmp_path / "real"
    (real / "annotations").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="refusing"):
        generate_coco_demo(str(real), log=_quiet)
    assert not osp.exists(osp.join(str(real), MARKER))
    with pytest.raises(ValueError, match="num_train"):
        generate_coco_demo(str(tmp_path / "x"), num_train=0, log=_quiet)


def test_lvis_layout_and_fields(lvis):
    from mmdet.datasets import LVISV1Dataset

    out, summary = lvis
    names = lvis_v1_category_names()
    assert names == list(LVISV1Dataset.METAINFO["classes"])  # the real LVIS v1 list, read without importing mmdet
    train = _load(osp.join(out, "annotations", "lvis_v1_train.json"))
    val = _load(osp.join(out, "annotations", "lvis_v1_val.json"))
    cats = train["categories"]
    assert [c["id"] for c in cats] == list(range(1, 1204)) and [c["name"] for c in cats] == names
    assert {c["frequency"] for c in cats} == {"r", "c", "f"}
    used = {c["id"]: c for c in cats if c["name"] in LVIS_DEMO_CLASSES}
    assert [used[i]["frequency"] for i in sorted(used, key=lambda i: LVIS_DEMO_CLASSES.index(used[i]["name"]))] \
        == ["f", "c", "r"]
    assert sum(c["instance_count"] for c in cats) == len(train["annotations"])
    for data, split in ((train, "train"), (val, "val")):
        assert "file_name" not in data["images"][0]
        for img in data["images"]:
            split_dir, fname = img["coco_url"].split("/")[-2:]
            assert split_dir == f"{split}2017" and osp.isfile(osp.join(out, split_dir, fname))
            present = {a["category_id"] for a in data["annotations"] if a["image_id"] == img["id"]}
            assert present and set(img["neg_category_ids"]) == set(used) - present
            assert img["not_exhaustive_category_ids"] == []
        for a in data["annotations"]:
            assert a["category_id"] in used and "iscrowd" not in a
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"])


def test_read_by_pycocotools_lvis_api_and_mmdet(coco, lvis):
    from lvis import LVIS
    from mmdet.datasets import CocoDataset, LVISV1Dataset
    from mmengine.registry import DefaultScope
    from pycocotools.coco import COCO

    out, _ = coco
    gt = COCO(osp.join(out, "annotations", "instances_val2017.json"))
    assert len(gt.getImgIds()) == 3 and gt.getCatIds(catNms=list(COCO_DEMO_CLASSES)) == [37, 38, 72]
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
                dict(type="PackDetInputs")]
    with DefaultScope.overwrite_default_scope("mmdet"):
        ds = CocoDataset(data_root=out + "/", ann_file="annotations/instances_train2017.json",
                         data_prefix=dict(img="train2017/"), pipeline=pipeline)
        assert len(ds) == 6
        item = ds[0]
        inst = item["data_samples"].gt_instances
        labels = {COCO_DEMO_CLASSES.index(CocoDataset.METAINFO["classes"][i]) for i in inst.labels.tolist()}
        assert labels <= {0, 1, 2} and len(inst) >= 1 and inst.masks.masks.shape[-2:] == (128, 128)
        # a config restricting the classes to the three shapes
        ds3 = CocoDataset(data_root=out + "/", ann_file="annotations/instances_train2017.json",
                          data_prefix=dict(img="train2017/"), metainfo=dict(classes=COCO_DEMO_CLASSES),
                          pipeline=pipeline)
        assert int(ds3[0]["data_samples"].gt_instances.labels.max()) <= 2

        lout, _ = lvis
        api = LVIS(osp.join(lout, "annotations", "lvis_v1_val.json"))
        assert len(api.get_img_ids()) == 4 and len(api.get_cat_ids()) == 1203
        lds = LVISV1Dataset(data_root=lout + "/", ann_file="annotations/lvis_v1_train.json",
                            data_prefix=dict(img=""), pipeline=pipeline)
        assert len(lds) == 8
        sample = lds[0]
        assert sample["data_samples"].img_path.startswith(osp.join(lout, "train2017"))
        assert len(sample["data_samples"].gt_instances) >= 1


@pytest.mark.parametrize("dataset", ["coco", "lvis"])
def test_cli(tmp_path, dataset):
    out = tmp_path / dataset
    cmd = [sys.executable, osp.join(ROOT, "tools", "generate_demo_data.py"), "--dataset", dataset, "--out", str(out),
           "--num-train", "2", "--num-val", "1", "--seed", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert is_complete(str(out), dataset, num_train=2, num_val=1, seed=3)
    assert f"{'COCO' if dataset == 'coco' else 'LVIS v1'}-layout demo dataset" in r.stdout
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "skipping" in r.stdout
