"""How tools/train.py and tools/test.py tell a user to train on a generated demo set (for their "dataset missing"
message, :func:`effvit_plugins.mm.data_check.check_data_or_exit`). This is repository knowledge, so it lives with
the tools, not in the installable package.

The demo config of a dataset is the one in ``configs/demo/`` named ``*_<dataset>-demo-*.py`` (COCO: the Mask R-CNN
one, what ``make demo-det`` trains, see scripts/demo_det.sh); ``make demo`` (scripts/demo.sh) trains the Cityscapes
one.
"""
import glob
import os

from effvit_plugins.mm.data_check import DemoRun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# dataset key (effvit_plugins.datasets.layouts) -> (file-name pattern of its demo config, make target)
_DEMOS = {"cityscapes": ("*_cityscapes-demo-*.py", "make demo"),
          "ade20k": ("*_ade20k-demo-*.py", None),
          "coco": ("mask-rcnn_*_coco-demo-*.py", "make demo-det")}


def demo_runs() -> dict:
    """Dataset key -> :class:`DemoRun` (config path relative to the repository root, make target)."""
    runs = {}
    for key, (pattern, target) in _DEMOS.items():
        found = sorted(glob.glob(os.path.join(ROOT, "configs", "demo", pattern)))
        runs[key] = DemoRun(os.path.relpath(found[0], ROOT) if found else None, target)
    return runs
