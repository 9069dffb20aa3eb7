"""demo/detectron2_demo.py (a subprocess, as a user runs it): Detectron2's DefaultPredictor and Visualizer on our
smallest Mask R-CNN and a semantic FPN config at a tiny test size; the pictures exist, open and have the input's
size. A missing image stops with a clear error."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "detectron2_demo.py"
CONFIGS = ROOT / "configs" / "detectron2"
TINY = ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160"]


def run_demo(*args, expect_rc=0):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, str(DEMO), *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == expect_rc, out[-4000:]
    return out


@pytest.mark.parametrize("config", [
    "COCO-InstanceSegmentation/mask_rcnn_edgevit_xxs_fpn_1x.yaml",
    "Cityscapes-SemanticSegmentation/semantic_edgevit_xs_fpn_40k.yaml",
])
def test_pictures(image_folder, image_sizes, tmp_path, config):
    out = run_demo("--config-file", CONFIGS / config, "--input", image_folder, "--output", tmp_path,
                   "--confidence-threshold", "0", "--opts", *TINY)
    assert f"2 picture(s) written to {tmp_path}" in out and "randomly initialised" in out
    for source, (h, w) in image_sizes.items():
        path = tmp_path / (Path(source).stem + ".png")
        assert str(path) in out
        with Image.open(path) as picture:
            picture.verify()
        with Image.open(path) as picture:
            assert picture.size == (w, h)


def test_missing_image(tmp_path):
    out = run_demo("--config-file", CONFIGS / "COCO-InstanceSegmentation/mask_rcnn_edgevit_xxs_fpn_1x.yaml",
                   "--input", tmp_path / "missing.jpg", "--output", tmp_path, expect_rc=2)
    assert "error: Image not found:" in out and "missing.jpg" in out
