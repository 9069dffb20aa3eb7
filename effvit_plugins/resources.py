"""The files that ship with the package besides its modules: the configs, the tools and the model index, in
``effvit_plugins/.mim/`` where OpenMMLab's ``mim`` looks for them (``mim search / train / test effvit_plugins``).

In a source checkout ``.mim/configs`` and ``.mim/tools`` are links to the repository's ``configs/`` and ``tools/``
(committed in git, see setup.py); in a wheel or an sdist they are copies.
"""
from __future__ import annotations

import glob
import os.path as osp
from typing import Optional

MIM_DIR = osp.join(osp.dirname(osp.abspath(__file__)), ".mim")

# dataset key (effvit_plugins.datasets.layouts) -> (file-name pattern of its demo config in configs/demo/, make
# target). The COCO one is the Mask R-CNN config `make demo-det` trains (scripts/demo_det.sh); `make demo`
# (scripts/demo.sh) trains the Cityscapes one.
_DEMOS = {"cityscapes": ("*_cityscapes-demo-*.py", "make demo"),
          "ade20k": ("*_ade20k-demo-*.py", None),
          "coco": ("mask-rcnn_*_coco-demo-*.py", "make demo-det")}


def mim_path(*parts: str) -> str:
    """A path under ``effvit_plugins/.mim`` (``mim_path('configs', 'demo')``, ``mim_path('tools', 'train.py')``)."""
    return osp.join(MIM_DIR, *parts)


def source_root() -> Optional[str]:
    """The repository root when the package runs from a source checkout (its ``.mim/configs`` is the link to the
    checkout's ``configs/``), else ``None`` (an installed wheel)."""
    configs = mim_path("configs")
    return osp.dirname(osp.realpath(configs)) if osp.islink(configs) else None


def demo_runs() -> dict:
    """How tools/train.py and tools/test.py tell a user to train on a generated demo set (their "dataset missing"
    message, :func:`effvit_plugins.mm.data_check.check_data_or_exit`): dataset key ->
    :class:`~effvit_plugins.mm.data_check.DemoRun`. From a source checkout the config path is relative to the
    repository root and the make target is given; from an installed package the path is the packaged config's and
    there is no make target (no Makefile)."""
    from .mm.data_check import DemoRun

    root = source_root()
    runs = {}
    for key, (pattern, target) in _DEMOS.items():
        found = sorted(glob.glob(mim_path("configs", "demo", pattern)))
        if not found:
            runs[key] = DemoRun(None, target if root else None)
        elif root:
            runs[key] = DemoRun(osp.join("configs", "demo", osp.basename(found[0])), target)
        else:
            runs[key] = DemoRun(found[0], None)
    return runs
