"""demo/image_demo.py as a user runs it (subprocesses): a detector by name on a folder, a segmentor by config file,
a classifier by name; the pictures exist, open, and have the input's size. Bad input (a missing image, an unknown
name) stops with a clear error."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "image_demo.py"


def run_demo(*args, expect_rc=0):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, str(DEMO), *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == expect_rc, out[-4000:]
    return out


def check_pictures(out, vis_dir, names, sizes):
    assert f"{len(names)} picture(s) written to {vis_dir}" in out, out[-2000:]
    for name, source in names.items():
        path = vis_dir / name
        assert str(path) in out
        with Image.open(path) as picture:
            picture.verify()
        with Image.open(path) as picture:
            assert picture.size == (sizes[source][1], sizes[source][0])


@pytest.mark.parametrize("image, model, options, pictures", [
    # a detector by name on a folder; mmdet's 1333x800 test scale made small for the CPU
    ("", "mask-rcnn_edgevit-xxs_fpn_8xb2-1x_coco",
     ["--score-thr", "0", "--cfg-options", "test_dataloader.dataset.pipeline.1.scale=(128,128)"],
     {"a.jpg": "a.jpg", "b.png": "b.png"}),
    ("a.jpg", "configs/edgevit/fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py", [], {"a.jpg": "a.jpg"}),
    ("", "efficientvit-msra-m0_8xb256_in1k", [], {"a.png": "a.jpg", "b.png": "b.png"}),
], ids=["detector-name-folder", "segmentor-config-image", "classifier-name-folder"])
def test_pictures(image_folder, image_sizes, tmp_path, image, model, options, pictures):
    out = run_demo(image_folder / image, model, "--out-dir", tmp_path / "out", *options)
    check_pictures(out, tmp_path / "out" / "vis", pictures, image_sizes)


def test_bad_input(image_folder, tmp_path, capsys):
    """In this process (the demo's main(argv)): a missing image, an unknown name."""
    spec = importlib.util.spec_from_file_location("effvit_image_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main([str(tmp_path / "missing.jpg"), "efficientvit-msra-m0_8xb256_in1k"]) == 2
    err = capsys.readouterr().err
    assert "error: Image not found:" in err and "missing.jpg" in err
    assert demo.main([str(image_folder), "mask-rcnn_edgevit-xxs_fpn_8xb2-1x_cocoo"]) == 2
    err = capsys.readouterr().err
    assert "error: No model named 'mask-rcnn_edgevit-xxs_fpn_8xb2-1x_cocoo'" in err
    assert "mask-rcnn_edgevit-xxs_fpn_8xb2-1x_coco," in err and "list_models" in err
