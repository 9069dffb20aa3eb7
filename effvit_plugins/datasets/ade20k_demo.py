"""A small synthetic scene-parsing dataset in the real ADE20K (SceneParsing, ``ADEChallengeData2016``) layout.

    <out>/ADEChallengeData2016/images/training/ADE_train_<8 digits>.jpg      RGB JPEG, sizes vary per image
    <out>/ADEChallengeData2016/images/validation/ADE_val_<8 digits>.jpg
    <out>/ADEChallengeData2016/annotations/{training,validation}/<same stem>.png    uint8, 0 = other, 1..150

It is what mmseg's ``ADEChallengeData2016``-based ``ADE20KDataset`` scans (``img_suffix='.jpg'``,
``seg_map_suffix='.png'``, ``reduce_zero_label=True``: 0 becomes ignore, class k becomes k - 1), so the ADE20K
configs run on it with only ``data_root`` changed (``<out>/ADEChallengeData2016``). The pictures are the
street scenes of :mod:`effvit_plugins.datasets.cityscapes_demo` (the same renderer) labelled with the ADE20K
classes (road, sidewalk, building, tree, grass, sky, person, car, pole, signboard; the ego-vehicle bonnet is 0 =
"other"), at a different size for every image (ADE20K images vary in size and aspect ratio).

Deterministic: image ``i`` of a split depends only on ``(seed, split, i)``. Idempotent: a marker file records
the parameters; a complete dataset with the same parameters is skipped. Needs only numpy and Pillow.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np

from . import cityscapes_demo as street
from . import demo_common

ROOT_NAME = "ADEChallengeData2016"
SPLITS = (("training", "train"), ("validation", "val"))  # (folder, file-name tag)
MARKER = ".effvit_ade20k_demo.json"
VERSION = 1
NUM_CLASSES = 150
OTHER = 0  # "other objects" in ADE20K; mmseg's reduce_zero_label turns it into the ignore index
# ADE20K class (1-based label value in the annotation PNGs, mmseg class index + 1) of each street-scene class
STREET_TO_ADE: Dict[int, Tuple[str, int]] = {
    street.BUILDING: ("building", 2), street.SKY: ("sky", 3), street.VEGETATION: ("tree", 5),
    street.ROAD: ("road", 7), street.TERRAIN: ("grass", 10), street.SIDEWALK: ("sidewalk", 12),
    street.PERSON: ("person", 13), street.CAR: ("car", 21), street.SIGN: ("signboard", 44),
    street.POLE: ("pole", 94),
}
USED_LABELS = tuple(sorted(v for _, v in STREET_TO_ADE.values()))


def _label_lut() -> np.ndarray:
    lut = np.full(256, OTHER, np.uint8)  # anything not drawn as an ADE20K class (the bonnet, 255) -> other
    for cls, (_, label) in STREET_TO_ADE.items():
        lut[cls] = label
    return lut


def image_size(rng: np.random.Generator, height: int, width: int, size_jitter: float) -> Tuple[int, int]:
    """The size of one image: each side scaled independently by a factor in ``[1 - j, 1 + j]``."""
    f = rng.uniform(1 - size_jitter, 1 + size_jitter, 2)
    return max(16, int(round(height * f[0]))), max(16, int(round(width * f[1])))


def render_ade_scene(rng: np.random.Generator, height: int = 128, width: int = 160,
                     size_jitter: float = 0.25) -> Tuple[np.ndarray, np.ndarray]:
    """One scene: ``(image HxWx3 uint8 RGB, annotation HxW uint8 ADE20K labels 0..150)``; H, W vary."""
    h, w = image_size(rng, height, width, size_jitter)
    img, lab = street.render_scene(rng, h, w)
    return img, _label_lut()[lab]


def stems(split_tag: str, num: int) -> List[str]:
    return [f"ADE_{split_tag}_{i + 1:08d}" for i in range(num)]


def expected_files(root: str, num_train: int, num_val: int) -> List[str]:
    files = []
    for (folder, tag), num in zip(SPLITS, (num_train, num_val)):
        for stem in stems(tag, num):
            files += [osp.join(root, "images", folder, stem + ".jpg"),
                      osp.join(root, "annotations", folder, stem + ".png")]
    return files


def _params(num_train, num_val, seed, height, width, size_jitter):
    return dict(generator="effvit_plugins.datasets.ade20k_demo", version=VERSION, num_train=num_train,
                num_val=num_val, seed=seed, height=height, width=width, size_jitter=float(size_jitter))


def data_root(out_dir: str) -> str:
    """The ``data_root`` of mmseg's ADE20K configs for a demo set written to ``out_dir``."""
    return osp.join(out_dir, ROOT_NAME)


def is_complete(out_dir: str, num_train: int = 100, num_val: int = 20, seed: int = 0, height: int = 128,
                width: int = 160, size_jitter: float = 0.25) -> bool:
    """True when ``out_dir`` holds a complete demo dataset generated with exactly these parameters."""
    root = data_root(out_dir)
    return demo_common.is_complete(root, MARKER, _params(num_train, num_val, seed, height, width, size_jitter),
                                   expected_files(root, num_train, num_val))


def generate_ade20k_demo(out_dir: str = "data/ade_demo", num_train: int = 100, num_val: int = 20, seed: int = 0,
                         height: int = 128, width: int = 160, size_jitter: float = 0.25, force: bool = False,
                         log=print) -> dict:
    """Write the demo dataset to ``<out_dir>/ADEChallengeData2016`` (skipped when already complete with the
    same parameters). Image sides are ``height`` / ``width`` times a random factor in ``[1 - size_jitter,
    1 + size_jitter]``.

    A ``ADEChallengeData2016`` with ``images`` or ``annotations`` but no marker of ours is refused (it may be the
    real dataset); a previous demo set with other parameters is replaced. Returns a summary dict
    (``data_root``: the folder to put in a config).
    """
    if num_train < 1 or num_val < 1:
        raise ValueError("num_train and num_val must be >= 1")
    if not 0 <= size_jitter < 1:
        raise ValueError(f"size_jitter must be in [0, 1), got {size_jitter}")
    root = data_root(out_dir)
    summary = dict(out_dir=out_dir, data_root=root, num_train=num_train, num_val=num_val, seed=seed,
                   generated=False)
    if not force and is_complete(out_dir, num_train, num_val, seed, height, width, size_jitter):
        log(f"Demo dataset already complete in {root} ({num_train} train / {num_val} val images); skipping.")
        return summary
    params = _params(num_train, num_val, seed, height, width, size_jitter)
    demo_common.prepare_output(root, MARKER, params, ("images", "annotations"))

    from PIL import Image

    for split_index, ((folder, tag), num) in enumerate(zip(SPLITS, (num_train, num_val))):
        os.makedirs(osp.join(root, "images", folder), exist_ok=True)
        os.makedirs(osp.join(root, "annotations", folder), exist_ok=True)
        for i, stem in enumerate(stems(tag, num)):
            img, lab = render_ade_scene(demo_common.image_rng(seed, split_index, i), height, width, size_jitter)
            Image.fromarray(img, "RGB").save(osp.join(root, "images", folder, stem + ".jpg"), quality=92)
            Image.fromarray(lab, "L").save(osp.join(root, "annotations", folder, stem + ".png"))
    demo_common.write_complete_marker(root, MARKER, params, used_labels={
        name: label for name, label in sorted(STREET_TO_ADE.values(), key=lambda x: x[1])})
    summary["generated"] = True
    log(f"Wrote an ADE20K-layout demo dataset to {root}: {num_train} train + {num_val} val images "
        f"(about {height}x{width}, each side +-{size_jitter:.0%}), {len(USED_LABELS)} of the 150 classes drawn.")
    return summary
