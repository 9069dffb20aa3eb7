"""The example mmdet project trains and tests with mmdet's *installed* tools, using effvit_plugins only through
``custom_imports`` in its config (backbone EfficientViTMSRA and neck EfficientViTMSRAFPN)."""
import os
import re
import subprocess
import sys

import mmdet

from effvit_plugins.datasets import generate_coco_demo

CONFIG = "projects/mmdet_efficientvit_msra/configs/retinanet_efficientvit-msra-m0_upfpn_1xb4-40iter_coco-demo-128x128.py"
MMDET_TOOLS = os.path.join(os.path.dirname(mmdet.__file__), ".mim", "tools")


def test_project_config_uses_only_custom_imports(repo_root):
    text = open(os.path.join(repo_root, CONFIG)).read()
    assert "custom_imports = dict(imports=['effvit_plugins']" in text
    assert "_base_ =" not in text and "import " not in text.replace("custom_imports", "")
    assert "type='EfficientViTMSRA'" in text and "type='EfficientViTMSRAFPN'" in text


def test_mmdet_installed_tools_train_and_test(tmp_path, repo_root):
    data = str(tmp_path / "coco_demo") + "/"
    generate_coco_demo(data, num_train=6, num_val=2, log=lambda *a: None)
    # the package is found on PYTHONPATH (the checkout) or as installed; mmdet's tools know nothing else of it
    env = dict(os.environ, PYTHONPATH=repo_root, OMP_WAIT_POLICY="PASSIVE")
    ann = f"{data}annotations/instances_val2017.json"
    opts = [f"train_dataloader.dataset.data_root={data}", f"val_dataloader.dataset.data_root={data}",
            f"test_dataloader.dataset.data_root={data}", f"val_evaluator.ann_file={ann}",
            f"test_evaluator.ann_file={ann}", "train_cfg.max_iters=4", "train_cfg.val_interval=4",
            "default_hooks.checkpoint.interval=4", "param_scheduler.0.end=2", "param_scheduler.1.begin=2",
            "param_scheduler.1.end=4", "param_scheduler.1.T_max=2"]
    work = tmp_path / "work"
    r = subprocess.run([sys.executable, os.path.join(MMDET_TOOLS, "train.py"), CONFIG, "--work-dir", str(work),
                        "--cfg-options", *opts], cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (work / "iter_4.pth").is_file()
    # mmdet's own test.py reads the runner checkpoint (torch 2.13 weights_only handled by effvit_plugins' import)
    r = subprocess.run([sys.executable, os.path.join(MMDET_TOOLS, "test.py"), CONFIG, str(work / "iter_4.pth"),
                        "--work-dir", str(work), "--cfg-options", *opts[:5], "model.test_cfg.score_thr=0.0"],
                       cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert re.search(r"coco/bbox_mAP: [\d.]+", out), out[-2000:]
