"""A tiny ImageFolder-style classification dataset (``<root>/{train,val}/<class>/*.png``) for tests and demos.

Each class has its own colour and stripe orientation plus noise, so a classifier learns it in a few dozen
iterations. Deterministic for a given seed; skipped when already complete.
"""
from __future__ import annotations

import os

import numpy as np

CLASSES = ("red_horizontal", "green_vertical", "blue_diagonal", "yellow_checker")
_COLOURS = ((220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40))


def _image(cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    period = rng.integers(6, 12)
    phase = rng.integers(0, period)
    pattern = [(yy + phase) // (period // 2) % 2, (xx + phase) // (period // 2) % 2,
               (xx + yy + phase) // (period // 2) % 2, ((xx // period) + (yy // period)) % 2][cls]
    base = np.array(_COLOURS[cls], dtype=np.float32)
    img = base[None, None] * (0.55 + 0.45 * pattern[..., None]) + rng.normal(0, 18, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def generate_imagefolder(root: str, num_train: int = 12, num_val: int = 4, size: int = 64, seed: int = 0) -> str:
    """Write ``num_train``/``num_val`` images per class; returns ``root``."""
    from PIL import Image

    stamp = os.path.join(root, ".complete")
    key = f"{num_train},{num_val},{size},{seed}"
    if os.path.isfile(stamp) and open(stamp).read() == key:
        return root
    rng = np.random.default_rng(seed)
    for split, n in (("train", num_train), ("val", num_val)):
        for c, name in enumerate(CLASSES):
            d = os.path.join(root, split, name)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                Image.fromarray(_image(c, size, rng)).save(os.path.join(d, f"{name}_{i:03d}.png"))
    with open(stamp, "w") as f:
        f.write(key)
    return root
