"""Tiny generated detection / instance-segmentation datasets in the real COCO 2017 and LVIS v1 layouts.

COCO (what mmdet's ``CocoDataset`` / ``CocoMetric`` and Detectron2's ``load_coco_json`` read)::

    <out>/annotations/instances_train2017.json   <out>/train2017/000000000001.jpg ...
    <out>/annotations/instances_val2017.json     <out>/val2017/000100000001.jpg ...

LVIS v1 (mmdet's ``LVISV1Dataset`` / ``LVISMetric``, Detectron2's ``load_lvis_json``: images are found through
``coco_url``, ``.../train2017/<file>`` -> ``<out>/train2017/<file>``)::

    <out>/annotations/lvis_v1_train.json   <out>/annotations/lvis_v1_val.json   <out>/train2017/   <out>/val2017/

Every image shows 1-4 non-overlapping filled shapes on a textured background; the shape decides the class and
each class has its own colour family (with jitter and shading): filled circles, squares and triangles (squares and
triangles randomly rotated). Boxes and polygon masks are exact (the polygon that was drawn; boxes are its extent),
so a detector trained from scratch for a few dozen iterations gets a clearly non-zero mAP.

* COCO: the annotation files list all 80 COCO categories with their official ids and supercategories; the shapes
  use three of them (:data:`COCO_DEMO_CLASSES`), so the 80-class configs run unchanged and a demo config may
  restrict ``metainfo.classes`` to the three.
* LVIS: all 1203 LVIS v1 categories with ids 1..1203 in the official order. The names are read from the installed
  mmdet (``LVISV1Dataset.METAINFO``) or Detectron2 (``LVIS_V1_CATEGORIES``) source, without importing either.
  Three are used (:data:`LVIS_DEMO_CLASSES`) with frequencies 'f', 'c', 'r' (so every LVIS frequency group is
  evaluated) and drawn with decreasing probability; the other categories have no images and are 'r'
  (the LVIS rule for <= 10 training images). Each image lists the used categories it does not show in
  ``neg_category_ids`` (so false positives count) and has an empty ``not_exhaustive_category_ids``.

Deterministic: image ``i`` of a split depends only on ``(seed, split, i)``. Idempotent: a marker file records the
parameters; a complete dataset with the same parameters is skipped (``force=True`` rewrites it). Needs only numpy
and Pillow (no torch / OpenMMLab import).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import os.path as osp
import shutil
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["COCO_CATEGORIES", "COCO_DEMO_CLASSES", "LVIS_DEMO_CLASSES", "SHAPES", "generate_coco_demo",
           "generate_lvis_demo", "is_complete", "lvis_v1_category_names", "render_shapes"]

# The 80 COCO 2017 categories in official id order (ids are not contiguous).
_COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush")
_COCO_MISSING_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
_COCO_IDS = tuple(i for i in range(1, 91) if i not in _COCO_MISSING_IDS)
# (first id, supercategory): each category belongs to the last entry whose first id is <= its id
_COCO_SUPER = ((1, "person"), (2, "vehicle"), (10, "outdoor"), (16, "animal"), (27, "accessory"),
               (34, "sports"), (44, "kitchen"), (52, "food"), (62, "furniture"), (72, "electronic"),
               (78, "appliance"), (84, "indoor"))
COCO_CATEGORIES: Tuple[dict, ...] = tuple(
    dict(supercategory=[s for first, s in _COCO_SUPER if first <= cid][-1], id=cid, name=name)
    for cid, name in zip(_COCO_IDS, _COCO_NAMES))

# shape -> base RGB colour; the classes below map the shapes to real category names (same order)
SHAPES: Tuple[Tuple[str, Tuple[int, int, int]], ...] = (
    ("circle", (225, 45, 40)), ("square", (40, 90, 225)), ("triangle", (45, 185, 60)))
COCO_DEMO_CLASSES = ("sports ball", "tv", "kite")
LVIS_DEMO_CLASSES = ("ball", "television_set", "kite")
_LVIS_FREQUENCY = ("f", "c", "r")      # of the used LVIS categories
_LVIS_SHAPE_PROBS = (0.5, 0.33, 0.17)  # rarer shapes for the rarer frequency groups
_COCO_SHAPE_PROBS = (1 / 3, 1 / 3, 1 / 3)

_RADIUS = (0.09, 0.22)  # circumradius of the shapes, as a fraction of the image's shorter side
MARKER = ".effvit_det_demo.json"
VERSION = 1
_SPLIT_CODE = {"train": 0, "val": 1}
_ID_OFFSET = {"train": 0, "val": 100_000_000}  # image ids (and file names) of the two splits never collide
_LVIS_NUM_CATEGORIES = 1203


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------
def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    """Vertices of a circle (24-gon) / square / equilateral triangle with circumradius ``r``."""
    n = {"circle": 24, "square": 4, "triangle": 3}[shape]
    if shape == "circle":
        angle = 0.0
    return [(cx + r * math.cos(angle + 2 * math.pi * k / n), cy + r * math.sin(angle + 2 * math.pi * k / n))
            for k in range(n)]


def _polygon_area(poly: Sequence[Tuple[float, float]]) -> float:
    x = np.asarray([p[0] for p in poly])
    y = np.asarray([p[1] for p in poly])
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Desaturated low-frequency colour noise + fine stripes + pixel noise (float32, HxWx3)."""
    from PIL import Image

    base = rng.uniform(70, 170) + rng.uniform(-15, 15, 3)
    coarse = rng.normal(0, 28, (5, 5, 3)).astype(np.float32)
    coarse = coarse.mean(axis=2, keepdims=True) * 0.7 + coarse * 0.3  # mostly grey variations
    smooth = np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((width, height), Image.BILINEAR))
                       for c in range(3)], axis=-1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta, period = rng.uniform(0, math.pi), rng.uniform(5, 12)
    stripes = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)[..., None]
    img = base + smooth + stripes * rng.uniform(4, 12) + rng.normal(0, 6, (height, width, 3))
    return img.astype(np.float32)


def render_shapes(rng: np.random.Generator, height: int = 128, width: int = 128,
                  probs: Sequence[float] = _COCO_SHAPE_PROBS, max_objects: int = 4
                  ) -> Tuple[np.ndarray, List[dict]]:
    """One image: ``(RGB uint8 HxWx3, objects)``; each object is ``dict(shape=index into SHAPES,
    polygon=[x1, y1, x2, y2, ...], bbox=[x, y, w, h], area=polygon area)`` in pixel coordinates."""
    from PIL import Image, ImageDraw

    img = _background(rng, height, width)
    side = min(height, width)
    placed: List[Tuple[float, float, float]] = []
    objects: List[dict] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        shape = int(rng.choice(len(SHAPES), p=np.asarray(probs) / np.sum(probs)))
        for _attempt in range(30):
            r = float(rng.uniform(*_RADIUS) * side)
            cx = float(rng.uniform(r + 1, width - r - 1))
            cy = float(rng.uniform(r + 1, height - r - 1))
            if all(math.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
                break
        else:
            continue  # no free space left for this object
        placed.append((cx, cy, r))
        poly = _shape_polygon(SHAPES[shape][0], cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
        poly = [(round(x, 2), round(y, 2)) for x, y in poly]
        mask_img = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask_img).polygon(poly, fill=1)
        mask = np.asarray(mask_img, dtype=bool)
        colour = np.asarray(SHAPES[shape][1], np.float32) + rng.uniform(-25, 25, 3)
        # a soft light direction across the object
        yy, xx = np.nonzero(mask)
        light = rng.uniform(-1, 1, 2)
        shade = 1 + 0.18 * ((xx - cx) * light[0] + (yy - cy) * light[1]) / max(r, 1)
        img[yy, xx] = colour[None] * shade[:, None] + rng.normal(0, 5, (len(yy), 3))
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        x0, y0 = min(xs), min(ys)
        objects.append(dict(shape=shape, polygon=[v for p in poly for v in p],
                            bbox=[round(x0, 2), round(y0, 2), round(max(xs) - x0, 2), round(max(ys) - y0, 2)],
                            area=round(_polygon_area(poly), 2)))
    img *= rng.uniform(0.85, 1.15)
    return img.clip(0, 255).astype(np.uint8), objects


# ---------------------------------------------------------------------------------------------------------------
# LVIS v1 category names (from the installed mmdet or Detectron2 source, read without importing them)
# ---------------------------------------------------------------------------------------------------------------
def _package_file(package: str, *parts: str) -> Optional[str]:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = osp.join(list(spec.submodule_search_locations)[0], *parts)
    return path if osp.isfile(path) else None


def _names_from_mmdet() -> Optional[List[str]]:
    path = _package_file("mmdet", "datasets", "lvis.py")
    if path is None:
        return None
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "LVISV1Dataset":
            for st in node.body:
                if isinstance(st, ast.Assign) and any(getattr(t, "id", None) == "METAINFO" for t in st.targets):
                    return list(ast.literal_eval(st.value)["classes"])
    return None


def _names_from_detectron2() -> Optional[List[str]]:
    path = _package_file("detectron2", "data", "datasets", "lvis_v1_categories.py")
    if path is None:
        return None
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "LVIS_V1_CATEGORIES" for t in node.targets):
            cats = ast.literal_eval(node.value)
            return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    return None


def lvis_v1_category_names() -> List[str]:
    """The 1203 LVIS v1 category names in id order (id = index + 1), from mmdet or Detectron2."""
    for reader in (_names_from_mmdet, _names_from_detectron2):
        names = reader()
        if names is not None and len(names) == _LVIS_NUM_CATEGORIES:
            return names
    raise RuntimeError("The LVIS v1 category names come from the installed mmdet (LVISV1Dataset.METAINFO) or "
                       "Detectron2 (LVIS_V1_CATEGORIES), and neither was found. Install mmdet or detectron2.")


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------
def _params(kind, num_train, num_val, seed, height, width):
    return dict(generator=f"effvit_plugins.datasets.coco_demo:{kind}", version=VERSION, num_train=num_train,
                num_val=num_val, seed=seed, height=height, width=width)


def _ann_files(out_dir: str, kind: str) -> Dict[str, str]:
    name = "instances_{}2017.json" if kind == "coco" else "lvis_v1_{}.json"
    return {s: osp.join(out_dir, "annotations", name.format(s)) for s in ("train", "val")}


def _image_file(split: str, i: int) -> Tuple[int, str]:
    img_id = _ID_OFFSET[split] + i + 1
    return img_id, f"{split}2017/{img_id:012d}.jpg"


def _read_marker(out_dir: str) -> Optional[dict]:
    try:
        with open(osp.join(out_dir, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_complete(out_dir: str, kind: str = "coco", num_train: int = 40, num_val: int = 12, seed: int = 0,
                height: int = 128, width: int = 128) -> bool:
    """True when ``out_dir`` holds a complete ``kind`` ('coco' / 'lvis') demo set made with these parameters."""
    marker = _read_marker(out_dir)
    if not marker or not marker.get("complete") or marker.get("params") != _params(
            kind, num_train, num_val, seed, height, width):
        return False
    files = list(_ann_files(out_dir, kind).values())
    files += [osp.join(out_dir, _image_file(s, i)[1]) for s, n in (("train", num_train), ("val", num_val))
              for i in range(n)]
    return all(osp.isfile(p) for p in files)


def _generate(kind: str, out_dir: str, num_train: int, num_val: int, seed: int, height: int, width: int,
              force: bool, log: Callable) -> dict:
    if num_train < 1 or num_val < 1:
        raise ValueError("num_train and num_val must be >= 1")
    if height < 64 or width < 64:
        raise ValueError(f"height and width must be >= 64 pixels (got {height}x{width}): the shapes need room.")
    title = "COCO" if kind == "coco" else "LVIS v1"
    ann_files = _ann_files(out_dir, kind)
    summary = dict(out_dir=out_dir, kind=kind, num_train=num_train, num_val=num_val, seed=seed, height=height,
                   width=width, ann_files=ann_files, generated=False)
    classes = COCO_DEMO_CLASSES if kind == "coco" else LVIS_DEMO_CLASSES
    summary["classes"] = classes
    if not force and is_complete(out_dir, kind, num_train, num_val, seed, height, width):
        log(f"{title} demo dataset already complete in {out_dir} ({num_train} train / {num_val} val images); "
            f"skipping.")
        return summary

    if kind == "coco":
        categories = [dict(c) for c in COCO_CATEGORIES]
        by_name = {c["name"]: c["id"] for c in categories}
        probs = _COCO_SHAPE_PROBS
    else:
        names = lvis_v1_category_names()
        missing = [n for n in classes if n not in names]
        if missing:
            raise RuntimeError(f"LVIS category names {missing} not found in the installed LVIS v1 list.")
        by_name = {n: names.index(n) + 1 for n in classes}
        freq = dict(zip(classes, _LVIS_FREQUENCY))
        categories = [{"id": i + 1, "name": n, "synset": "", "synonyms": [n], "def": "",
                       "frequency": freq.get(n, "r"), "image_count": 0, "instance_count": 0}
                      for i, n in enumerate(names)]
        probs = _LVIS_SHAPE_PROBS
    shape_cat = [by_name[n] for n in classes]

    # refuse to write into what may be a real dataset; replace an earlier demo set of ours
    marker = _read_marker(out_dir)
    ours = marker is not None and str(marker.get("params", {}).get("generator", "")).startswith(
        "effvit_plugins.datasets.coco_demo")
    existing = [p for p in [osp.join(out_dir, d) for d in ("annotations", "train2017", "val2017")] if osp.exists(p)]
    if existing and not ours:
        raise FileExistsError(
            f"{existing[0]} exists but {out_dir} was not made by this generator (no {MARKER}); refusing to write "
            f"into what may be a real dataset. Choose another output folder.")
    for p in existing:
        shutil.rmtree(p)
    os.makedirs(osp.join(out_dir, "annotations"), exist_ok=True)
    params = _params(kind, num_train, num_val, seed, height, width)
    with open(osp.join(out_dir, MARKER), "w") as f:
        json.dump(dict(params=params, complete=False), f)

    from PIL import Image

    counts = {}
    for split, num in (("train", num_train), ("val", num_val)):
        os.makedirs(osp.join(out_dir, f"{split}2017"), exist_ok=True)
        images, annotations = [], []
        ann_id = _ID_OFFSET[split]
        for i in range(num):
            rng = np.random.default_rng([seed, _SPLIT_CODE[split], i])
            img, objects = render_shapes(rng, height, width, probs)
            img_id, rel = _image_file(split, i)
            Image.fromarray(img, "RGB").save(osp.join(out_dir, rel), quality=95)
            url = f"http://images.cocodataset.org/{rel}"
            info = dict(id=img_id, height=height, width=width, license=1, coco_url=url, flickr_url="",
                        date_captured="2017-01-01 00:00:00")
            present = sorted({shape_cat[o["shape"]] for o in objects})
            if kind == "coco":
                info["file_name"] = osp.basename(rel)
            else:
                info["neg_category_ids"] = sorted(set(shape_cat) - set(present))
                info["not_exhaustive_category_ids"] = []
            images.append(info)
            for o in objects:
                ann_id += 1
                ann = dict(id=ann_id, image_id=img_id, category_id=shape_cat[o["shape"]],
                           segmentation=[o["polygon"]], area=o["area"], bbox=o["bbox"])
                if kind == "coco":
                    ann["iscrowd"] = 0
                annotations.append(ann)
        if kind == "lvis" and split == "train":
            for c in categories:
                c["instance_count"] = sum(a["category_id"] == c["id"] for a in annotations)
                c["image_count"] = len({a["image_id"] for a in annotations if a["category_id"] == c["id"]})
        data = dict(info=dict(description=f"effvit_plugins synthetic {title} demo ({split})", version="1.0",
                              year=2017, contributor="effvit_plugins", date_created="2017-01-01"),
                    licenses=[dict(id=1, name="CC0 1.0 (synthetic images)", url="")],
                    images=images, annotations=annotations, categories=categories)
        with open(ann_files[split], "w") as f:
            json.dump(data, f)
        counts[split] = len(annotations)
    with open(osp.join(out_dir, MARKER), "w") as f:
        json.dump(dict(params=params, complete=True, classes=list(classes),
                       category_ids=shape_cat), f, indent=1)
    summary.update(generated=True, num_instances=counts, category_ids=shape_cat)
    log(f"Wrote a {title}-layout demo dataset to {out_dir}: {num_train} train + {num_val} val images ({height}x"
        f"{width}), {counts['train']} + {counts['val']} instances of {', '.join(classes)} "
        f"(circles, squares, triangles).")
    return summary


def generate_coco_demo(out_dir: str = "data/coco_demo", num_train: int = 40, num_val: int = 12, seed: int = 0,
                       height: int = 128, width: int = 128, force: bool = False, log: Callable = print) -> dict:
    """Write the COCO-layout demo set to ``out_dir`` (skipped when already complete with the same parameters).

    Returns a summary dict (``out_dir``, ``ann_files``, ``classes``, ``generated``, ``num_instances`` ...).
    A folder with ``annotations/``, ``train2017/`` or ``val2017/`` but no marker of ours is refused (it may be
    the real COCO); an earlier demo set with other parameters is replaced.
    """
    return _generate("coco", out_dir, num_train, num_val, seed, height, width, force, log)


def generate_lvis_demo(out_dir: str = "data/lvis_v1_demo", num_train: int = 40, num_val: int = 12, seed: int = 0,
                       height: int = 128, width: int = 128, force: bool = False, log: Callable = print) -> dict:
    """Write the LVIS v1-layout demo set to ``out_dir``; same contract as :func:`generate_coco_demo`."""
    return _generate("lvis", out_dir, num_train, num_val, seed, height, width, force, log)
