"""A small synthetic street-scene dataset in the real Cityscapes folder layout.

    <out>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png        RGB, H x W (default 128 x 256)
    <out>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png     uint8, 0..18, 255 = ignore
    <out>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png          uint8, Cityscapes label ids

It is what mmseg's ``CityscapesDataset`` scans (``img_suffix='_leftImg8bit.png'``,
``seg_map_suffix='_gtFine_labelTrainIds.png'``), so the Cityscapes configs run on it with only ``data_root``
changed. Each image is a perspective street: sky on top, buildings (with windows) and trees on the horizon,
a road with lane markings between sidewalks and terrain, cars on the road, persons and poles with traffic
signs on the sidewalks, sometimes the ego-vehicle's bonnet at the bottom (label 255, as in Cityscapes).
Every class has its own colour family plus per-object jitter, texture and pixel noise: a small model learns
it in a few hundred iterations on a CPU, yet it is not a per-pixel colour lookup.

Deterministic: image ``i`` of a split depends only on ``(seed, split, i)`` (not on how many are generated).
Idempotent: a marker file records the parameters; a complete dataset with the same parameters is skipped.
Needs only numpy and Pillow (no torch / OpenMMLab).
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np

from . import demo_common

CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
           "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
           "bicycle")
# official Cityscapes label id of each train id (labelIds maps); ignore (255) -> 0 'unlabeled', ego vehicle -> 1
TRAINID_TO_LABELID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
IGNORE = 255
ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = 0, 1, 2, 5, 7, 8, 9, 10, 11, 13
USED_CLASSES = (ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR)

TRAIN_CITIES = ("pixelburg", "rasterdam", "voxelton")
VAL_CITIES = ("synthbrook", "meshlingen")
FRAME = 19  # gtFine frames are the 20th frame of each Cityscapes snippet (<seq>_000019)
MARKER = ".effvit_cityscapes_demo.json"
VERSION = 2

# base RGB colour of each class in the images (objects jitter around it)
_COLOUR = {
    ROAD: (88, 86, 92), SIDEWALK: (168, 146, 158), BUILDING: (128, 108, 96), POLE: (150, 150, 156),
    SIGN: (226, 200, 24), VEGETATION: (58, 112, 40), TERRAIN: (150, 170, 96), SKY: (96, 150, 214),
    PERSON: (190, 44, 64), CAR: (30, 52, 150),
}


def _jitter(rng: np.random.Generator, cls: int, amount: float = 18.0) -> np.ndarray:
    return np.asarray(_COLOUR[cls], np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32)


def _paint(img, lab, mask, colour, cls):
    img[mask] = colour
    lab[mask] = cls


def render_scene(rng: np.random.Generator, height: int = 128, width: int = 256) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic street scene: ``(image HxWx3 uint8 RGB, label HxW uint8 train ids / 255)``."""
    H, W = height, width
    img = np.zeros((H, W, 3), np.float32)
    lab = np.full((H, W), SKY, np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    yy = yy.astype(np.float32)
    xx = xx.astype(np.float32)

    # sky: vertical gradient, lighter towards the horizon
    h0 = int(H * rng.uniform(0.36, 0.5))
    top, bottom = _jitter(rng, SKY, 12), np.asarray((185, 208, 232), np.float32)
    t = (yy / max(h0, 1)).clip(0, 1)[..., None]
    img[:] = top * (1 - t) + bottom * t

    # skyline: buildings with window grids, trees, gaps
    x = int(rng.integers(-10, 5))
    while x < W:
        bw = int(rng.integers(W // 12, W // 4))
        kind = rng.choice(3, p=(0.62, 0.28, 0.10))
        if kind == 0:  # building
            bt = int(rng.uniform(0.04, 0.8) * h0)
            m = (xx >= x) & (xx < x + bw) & (yy >= bt) & (yy < h0 + 2)
            col = _jitter(rng, BUILDING, 26)
            _paint(img, lab, m, col, BUILDING)
            pitch_x, pitch_y = int(rng.integers(6, 11)), int(rng.integers(7, 12))
            win = m & ((xx - x) % pitch_x >= 2) & ((xx - x) % pitch_x < pitch_x - 2) \
                & ((yy - bt) % pitch_y >= 3) & ((yy - bt) % pitch_y < pitch_y - 1) & (yy < h0 - 3)
            img[win] = col * rng.uniform(0.45, 0.7)
        elif kind == 1:  # tree: textured ellipse on a trunk-less blob
            cx, cy = x + bw / 2, h0 - rng.uniform(0.15, 0.45) * h0
            rx, ry = bw / 2 + 2, rng.uniform(0.25, 0.5) * h0
            m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            m |= (xx >= cx - rx * 0.8) & (xx < cx + rx * 0.8) & (yy >= cy) & (yy < h0 + 2)
            col = _jitter(rng, VEGETATION, 14)
            _paint(img, lab, m, col, VEGETATION)
            tex = rng.normal(0, 1, (H, W)).astype(np.float32)
            img[m] += (tex[m] * 18)[:, None]
        x += bw

    # ground: terrain | sidewalk | road | sidewalk | terrain, converging to a vanishing point on the horizon
    vx = W * rng.uniform(0.35, 0.65)
    depth = ((yy - h0) / max(H - h0, 1)).clip(0, 1)  # 0 at the horizon, 1 at the bottom row
    road_l, road_r = W * rng.uniform(-0.15, 0.2), W * rng.uniform(0.8, 1.15)
    walk = W * rng.uniform(0.12, 0.3)
    xl = vx + (road_l - vx) * depth
    xr = vx + (road_r - vx) * depth
    ground = yy >= h0
    _paint(img, lab, ground, _jitter(rng, TERRAIN, 14), TERRAIN)
    img[ground] += (rng.normal(0, 1, (H, W)).astype(np.float32)[ground] * 12)[:, None]
    side = ground & (xx >= xl - walk * depth) & (xx < xr + walk * depth)
    scol = _jitter(rng, SIDEWALK, 14)
    _paint(img, lab, side, scol, SIDEWALK)
    tiles = side & (((xx.astype(np.int32) // 6) + (yy.astype(np.int32) // 4)) % 2 == 0)
    img[tiles] = scol * 0.88
    road = ground & (xx >= xl) & (xx < xr)
    _paint(img, lab, road, _jitter(rng, ROAD, 10), ROAD)
    # dashed centre line (still road)
    centre = vx + ((road_l + road_r) / 2 - vx) * depth
    dash = road & (np.abs(xx - centre) < 0.5 + 2.5 * depth) & ((yy.astype(np.int32) // 5) % 2 == 0) & (depth > 0.1)
    img[dash] = (225, 225, 215)

    # poles with traffic signs, persons on the sidewalks, cars on the road; far objects first
    objects = []
    for _ in range(int(rng.integers(0, 3))):
        objects.append(("pole", rng.uniform(0.25, 0.95)))
    for _ in range(int(rng.integers(0, 4))):
        objects.append(("person", rng.uniform(0.2, 0.95)))
    for _ in range(int(rng.integers(1, 4))):
        objects.append(("car", rng.uniform(0.15, 0.9)))
    objects.sort(key=lambda o: o[1])
    for kind, d in objects:
        yb = h0 + d * (H - h0)
        s = max(d, 0.08)  # perspective scale
        l_edge, r_edge = vx + (road_l - vx) * d, vx + (road_r - vx) * d
        if kind == "car":
            cw = s * W * rng.uniform(0.22, 0.32)
            ch = cw * rng.uniform(0.45, 0.6)
            cx0 = rng.uniform(l_edge, max(l_edge + 1, r_edge - cw))
            col = _jitter(rng, CAR, 22)
            body = (xx >= cx0) & (xx < cx0 + cw) & (yy >= yb - ch * 0.62) & (yy < yb)
            cabin = (xx >= cx0 + cw * 0.18) & (xx < cx0 + cw * 0.82) & (yy >= yb - ch) & (yy < yb - ch * 0.6)
            _paint(img, lab, body | cabin, col, CAR)
            glass = (xx >= cx0 + cw * 0.24) & (xx < cx0 + cw * 0.76) & (yy >= yb - ch * 0.92) & (yy < yb - ch * 0.64)
            img[glass] = (150, 170, 190)
            for wx in (cx0 + cw * 0.2, cx0 + cw * 0.8):
                wheel = ((xx - wx) ** 2 + (yy - yb + ch * 0.05) ** 2) <= (ch * 0.2) ** 2
                _paint(img, lab, wheel, (22, 22, 26), CAR)
        else:
            left = rng.random() < 0.5
            lo, hi = (l_edge - walk * d, l_edge - 1) if left else (r_edge + 1, r_edge + walk * d)
            px = rng.uniform(min(lo, hi), max(lo, hi))
            if kind == "person":
                ph = s * H * rng.uniform(0.45, 0.6)
                pw = ph * 0.32
                col = _jitter(rng, PERSON, 22)
                torso = ((xx - px) / (pw / 2)) ** 2 + ((yy - (yb - ph * 0.5)) / (ph * 0.42)) ** 2 <= 1
                head = (xx - px) ** 2 + (yy - (yb - ph * 0.9)) ** 2 <= (ph * 0.1 + 0.5) ** 2
                _paint(img, lab, torso, col, PERSON)
                _paint(img, lab, head, (205, 165, 135), PERSON)
            else:
                ph = s * H * rng.uniform(0.8, 1.1)
                pw = max(2.0, 4.0 * s)
                pole = (xx >= px - pw / 2) & (xx < px + pw / 2) & (yy >= yb - ph) & (yy < yb)
                _paint(img, lab, pole, _jitter(rng, POLE, 10), POLE)
                sw = max(5.0, 13 * s)
                sign = (np.abs(xx - px) < sw / 2) & (yy >= yb - ph - sw * 0.2) & (yy < yb - ph + sw * 0.8)
                _paint(img, lab, sign, _jitter(rng, SIGN, 12), SIGN)

    # ego-vehicle bonnet at the bottom: ignored, as in Cityscapes
    if rng.random() < 0.5:
        k = int(rng.integers(4, 10))
        bonnet = yy >= H - k - 3 * np.cos((xx - W / 2) / W * np.pi)
        _paint(img, lab, bonnet, (24, 24, 30), IGNORE)

    # illumination and sensor noise
    img *= rng.uniform(0.8, 1.15)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return img.clip(0, 255).astype(np.uint8), lab


def sample_names(split: str, num: int) -> List[Tuple[str, str]]:
    """``(city, stem)`` of the ``num`` images of ``split``, stem = ``<city>_<seq:06d>_<frame:06d>``."""
    cities = TRAIN_CITIES if split == "train" else VAL_CITIES
    return [(cities[i % len(cities)], f"{cities[i % len(cities)]}_{i // len(cities):06d}_{FRAME:06d}")
            for i in range(num)]


def _paths(out_dir: str, split: str, city: str, stem: str) -> Dict[str, str]:
    return dict(
        img=osp.join(out_dir, "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"),
        train_ids=osp.join(out_dir, "gtFine", split, city, f"{stem}_gtFine_labelTrainIds.png"),
        label_ids=osp.join(out_dir, "gtFine", split, city, f"{stem}_gtFine_labelIds.png"),
    )


def expected_files(out_dir: str, num_train: int, num_val: int, label_ids: bool = True) -> List[str]:
    files = []
    for split, num in (("train", num_train), ("val", num_val)):
        for city, stem in sample_names(split, num):
            p = _paths(out_dir, split, city, stem)
            files.extend([p["img"], p["train_ids"]] + ([p["label_ids"]] if label_ids else []))
    return files


def _params(num_train, num_val, seed, height, width, label_ids=True):
    return dict(generator="effvit_plugins.datasets.cityscapes_demo", version=VERSION, num_train=num_train,
                num_val=num_val, seed=seed, height=height, width=width, label_ids=bool(label_ids))


def is_complete(out_dir: str, num_train: int = 100, num_val: int = 20, seed: int = 0, height: int = 128,
                width: int = 256, label_ids: bool = True) -> bool:
    """True when ``out_dir`` holds a complete demo dataset generated with exactly these parameters."""
    return demo_common.is_complete(out_dir, MARKER, _params(num_train, num_val, seed, height, width, label_ids),
                                   expected_files(out_dir, num_train, num_val, label_ids))


def generate_cityscapes_demo(out_dir: str = "data/cityscapes_demo", num_train: int = 100, num_val: int = 20,
                             seed: int = 0, height: int = 128, width: int = 256, force: bool = False,
                             label_ids: bool = True, log=print) -> dict:
    """Write the demo dataset to ``out_dir`` (skipped when already complete with the same parameters).

    A folder that has a ``leftImg8bit`` or ``gtFine`` directory but no marker of ours is refused (it may be a
    real dataset); a previous demo dataset with other parameters is replaced. Returns a summary dict
    (``data_root``: the folder to put in a config).
    """
    if num_train < 1 or num_val < 1:
        raise ValueError("num_train and num_val must be >= 1")
    summary = dict(out_dir=out_dir, data_root=out_dir, num_train=num_train, num_val=num_val, seed=seed,
                   generated=False)
    if not force and is_complete(out_dir, num_train, num_val, seed, height, width, label_ids):
        log(f"Demo dataset already complete in {out_dir} ({num_train} train / {num_val} val images); skipping.")
        return summary
    params = _params(num_train, num_val, seed, height, width, label_ids)
    demo_common.prepare_output(out_dir, MARKER, params, ("leftImg8bit", "gtFine"))

    from PIL import Image

    lut = np.zeros(256, np.uint8)  # train id -> label id; 255 (ignore / ego vehicle) -> 1 'ego vehicle'
    lut[:len(TRAINID_TO_LABELID)] = TRAINID_TO_LABELID
    lut[IGNORE] = 1
    split_code = {"train": 0, "val": 1}
    for split, num in (("train", num_train), ("val", num_val)):
        for i, (city, stem) in enumerate(sample_names(split, num)):
            rng = demo_common.image_rng(seed, split_code[split], i)
            img, lab = render_scene(rng, height, width)
            p = _paths(out_dir, split, city, stem)
            os.makedirs(osp.dirname(p["img"]), exist_ok=True)
            os.makedirs(osp.dirname(p["train_ids"]), exist_ok=True)
            Image.fromarray(img, "RGB").save(p["img"])
            Image.fromarray(lab, "L").save(p["train_ids"])
            if label_ids:
                Image.fromarray(lut[lab], "L").save(p["label_ids"])
    demo_common.write_complete_marker(out_dir, MARKER, params, classes=list(CLASSES),
                                      used_train_ids=list(USED_CLASSES))
    summary["generated"] = True
    log(f"Wrote a Cityscapes-layout demo dataset to {out_dir}: {num_train} train + {num_val} val images "
        f"({height}x{width}), cities {', '.join(TRAIN_CITIES)} (train) / {', '.join(VAL_CITIES)} (val).")
    return summary
