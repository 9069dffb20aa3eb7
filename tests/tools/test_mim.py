"""OpenMMLab's ``mim`` on this source checkout: ``mim search effvit_plugins`` lists every model of model-index.yml;
``mim train effvit_plugins CONFIG`` and ``mim test effvit_plugins CONFIG --checkpoint ...`` find the config by its
file name and run ``effvit_plugins/.mim/tools/{train,test}.py`` through the checkout's committed links, a few
iterations on a tiny generated ADE20K set.

mim takes a package's files from beside its metadata. An editable install keeps that in site-packages, so mim is run
as docs/setup.md says, with the checkout first on the path (``PYTHONPATH=$PWD mim ...``), where scripts/setup.sh
wrote ``effvit_plugins.egg-info``; the fixture writes it the same way when it is missing. (The wheel: see
tests/test_packaging.py.)
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
from modelindex.load_model_index import load

from effvit_plugins.testing import mim_search_names

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MIM = osp.join(osp.dirname(sys.executable), "mim")  # openmim's console script (scripts/setup.sh installs it)
DEMO_CONFIG = "fpn_edgevit-xxs_1xb4-200iter_ade20k-demo-64x64.py"  # the smallest demo config (64x64 crops)


def run_mim(args, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONPATH=ROOT)
    r = subprocess.run([MIM] + [str(a) for a in args], cwd=str(cwd), env=env, capture_output=True, text=True,
                       timeout=timeout)
    r.output = r.stdout + r.stderr
    assert r.returncode == 0, r.output[-5000:]
    return r


@pytest.fixture(scope="module")
def checkout_metadata():
    """The checkout's effvit_plugins.egg-info (gitignored), as scripts/setup.sh writes it."""
    if not osp.isfile(osp.join(ROOT, "effvit_plugins.egg-info", "PKG-INFO")):
        subprocess.run([sys.executable, "-W", "ignore", "setup.py", "-q", "egg_info"], cwd=ROOT, check=True,
                       capture_output=True)


def test_mim_search_lists_every_model(checkout_metadata, tmp_path):
    names = [m.name for m in load(osp.join(ROOT, "model-index.yml")).models]
    r = run_mim(["search", "effvit_plugins"], cwd=tmp_path)
    assert names and sorted(mim_search_names(r.stdout)) == sorted(names), r.output[-3000:]


@pytest.fixture(scope="module")
def ade_demo(tmp_path_factory):
    from effvit_plugins.datasets import generate_ade20k_demo

    out = tmp_path_factory.mktemp("ade_demo")
    return generate_ade20k_demo(str(out), num_train=2, num_val=1, height=64, width=80, seed=0,
                                log=lambda *a: None)["data_root"]


@pytest.fixture(scope="module")
def trained(checkout_metadata, ade_demo, tmp_path_factory):
    """``mim train effvit_plugins DEMO_CONFIG`` for 2 iterations: (work_dir, completed process, data options)."""
    work = tmp_path_factory.mktemp("mim_train")
    data = [f"{loader}.dataset.data_root={ade_demo}" for loader in ("train_dataloader", "val_dataloader",
                                                                    "test_dataloader")]
    r = run_mim(["train", "effvit_plugins", DEMO_CONFIG, "--work-dir", work, "--cfg-options", *data,
                 "train_cfg.max_iters=2", "train_cfg.val_interval=2", "train_dataloader.batch_size=2",
                 "default_hooks.checkpoint.interval=2", "default_hooks.logger.interval=1"], cwd=work)
    return work, r, data


def test_mim_train_runs_the_packaged_tool_on_the_checkout(trained):
    work, r, _ = trained
    config = osp.join(ROOT, "configs", "demo", DEMO_CONFIG)
    assert f"will use {config} instead" in r.output, r.output[-3000:]  # found by name, through .mim/configs
    assert osp.join(ROOT, "effvit_plugins", ".mim", "tools", "train.py") in r.output, r.output[-3000:]
    assert "Iter(train) [2/2]" in r.output, r.output[-3000:]
    assert (work / "iter_2.pth").is_file(), os.listdir(work)


def test_mim_test_evaluates_the_checkpoint(trained, tmp_path):
    work, _, data = trained
    r = run_mim(["test", "effvit_plugins", DEMO_CONFIG, "--checkpoint", work / "iter_2.pth", "--work-dir", tmp_path,
                 "--cfg-options", data[2]], cwd=tmp_path)
    assert osp.join(ROOT, "effvit_plugins", ".mim", "tools", "test.py") in r.output, r.output[-3000:]
    assert "mIoU" in r.output, r.output[-3000:]
