"""The example downstream project trains and tests with mmseg's *installed* tools, using effvit_plugins only
through ``custom_imports`` in its config."""
import os
import re
import subprocess
import sys


import mmseg

from effvit_plugins.datasets import generate_cityscapes_demo

CONFIG = "projects/mmseg_efficientvit_fpn/configs/efficientvit-b0_fpn_1xb2-40iter_cityscapes-demo-128x256.py"
MMSEG_TOOLS = os.path.join(os.path.dirname(mmseg.__file__), ".mim", "tools")


def test_project_config_uses_only_custom_imports(repo_root):
    text = open(os.path.join(repo_root, CONFIG)).read()
    assert "custom_imports = dict(imports=['effvit_plugins']" in text
    assert "_base_" not in text and "import " not in text.replace("custom_imports", "")


def test_mmseg_installed_tools_train_and_test(tmp_path, repo_root):
    data = str(tmp_path / "cityscapes_demo")
    generate_cityscapes_demo(data, num_train=6, num_val=2, log=lambda *a: None)
    env = dict(os.environ, PYTHONPATH="")  # nothing but the installed packages
    opts = [f"train_dataloader.dataset.data_root={data}", f"val_dataloader.dataset.data_root={data}",
            f"test_dataloader.dataset.data_root={data}", "train_cfg.max_iters=4", "train_cfg.val_interval=4",
            "default_hooks.checkpoint.interval=4", "param_scheduler.0.end=4"]
    work = tmp_path / "work"
    r = subprocess.run([sys.executable, os.path.join(MMSEG_TOOLS, "train.py"), CONFIG, "--work-dir", str(work),
                        "--cfg-options", *opts], cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (work / "iter_4.pth").is_file()
    # mmseg's own test.py reads the runner checkpoint (torch 2.13 weights_only handled by effvit_plugins' import)
    r = subprocess.run([sys.executable, os.path.join(MMSEG_TOOLS, "test.py"), CONFIG, str(work / "iter_4.pth"),
                        "--work-dir", str(work), "--cfg-options", *opts[:3]], cwd=repo_root, env=env,
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert re.search(r"mIoU: [\d.]+", out), out[-2000:]
