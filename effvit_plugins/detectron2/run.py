"""Run any Detectron2 tool script on our yaml configs, unmodified::

    python -m effvit_plugins.detectron2.run TOOL.py [ARGS ...]

``TOOL.py`` is a script of Detectron2's source tree (``tools/plain_train_net.py``, ``tools/train_net.py``,
``tools/analyze_model.py``, ``tools/deploy/export_model.py``, ...) or any script written the same way. Before the
script runs, :func:`install` makes Detectron2 understand our configs: ``get_cfg()`` carries the effvit_plugins keys
(:func:`effvit_plugins.detectron2.add_effvit_config`) and our backbones and demo datasets are registered. The script
then runs as ``__main__`` with ``sys.argv = [TOOL.py, ARGS ...]``, as ``python TOOL.py ARGS`` would.
"""
from __future__ import annotations

import os
import runpy
import sys
from typing import List, Optional

__all__ = ["install", "main"]

_installed = False


def install() -> None:
    """Patch Detectron2 (idempotent) so that its tools build, train and export our configs."""
    global _installed
    if _installed:
        return
    import detectron2.config as d2_config

    from . import add_effvit_config  # registers our backbones and demo datasets

    original_get_cfg = d2_config.get_cfg

    def get_cfg():
        return add_effvit_config(original_get_cfg())

    get_cfg.__doc__ = original_get_cfg.__doc__
    d2_config.get_cfg = get_cfg
    _installed = True


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        raise SystemExit(0 if argv else 2)
    tool = argv[0]
    if not os.path.isfile(tool):
        raise SystemExit(f"effvit_plugins.detectron2.run: no such script {tool!r}. Give the path of a Detectron2 "
                         "tool script, e.g. detectron2/tools/plain_train_net.py of Detectron2's source tree.")
    install()
    sys.argv = [tool] + argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(tool)))
    runpy.run_path(tool, run_name="__main__")


if __name__ == "__main__":
    main()
