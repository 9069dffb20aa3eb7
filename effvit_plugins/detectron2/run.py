"""Run any Detectron2 tool script on our yaml configs, unmodified::

    python -m effvit_plugins.detectron2.run TOOL.py [ARGS ...]

``TOOL.py`` is a script of Detectron2's source tree (``tools/plain_train_net.py``, ``tools/train_net.py``,
``tools/analyze_model.py``, ``tools/deploy/export_model.py``, ...) or any script written the same way. Before the
script runs, :func:`install` patches Detectron2 in this process (and in every process that Detectron2's
``launch()`` starts for ``--num-gpus N`` / ``--num-machines N``):

* ``get_cfg()`` carries the effvit_plugins keys (:func:`effvit_plugins.detectron2.add_effvit_config`); our
  backbones and demo datasets are registered.
* ``build_optimizer`` / ``build_lr_scheduler`` (``detectron2.solver``, which the scripts and ``DefaultTrainer``
  call) are :mod:`effvit_plugins.detectron2.solver`'s: ``SOLVER.OPTIMIZER`` (``ADAMW``), ``SOLVER.BETAS``,
  ``SOLVER.WEIGHT_DECAY_ATTN_BIAS`` and the ``WarmupPolyLR`` schedule take effect.
* ``build_model`` compiles the backbone with ``torch.compile`` when ``SOLVER.COMPILE.ENABLED`` is set
  (:func:`effvit_plugins.detectron2.engine.compile_backbone`).
* ``DetectionCheckpointer`` is :class:`~effvit_plugins.detectron2.checkpoint.EffViTCheckpointer`: ``MODEL.WEIGHTS``
  may be an official weight file / URL of our families, and checkpoints load with ``weights_only=True``.
* ``create_ddp_model`` (what ``DefaultTrainer`` and ``lazyconfig_train_net.py`` wrap the model with) leaves
  ``device_ids`` out for a model on the CPU (:func:`effvit_plugins.detectron2.engine.create_ddp_model`), so that
  ``--num-gpus N`` with ``MODEL.DEVICE cpu`` trains N gloo processes (``plain_train_net.py`` builds
  ``DistributedDataParallel`` itself, with ``device_ids``: it needs GPUs for that).
* Export (``tools/deploy/export_model.py``, :func:`effvit_plugins.detectron2.export.patch_export`):
  ``torch.onnx.export`` uses the TorchScript exporter at Detectron2's opset (11) unless told otherwise (torch's
  default, the dynamo exporter, needs ``onnxscript``); ``RoIAlign(aligned=True)`` exports correctly at opsets 11-15;
  files written through Detectron2's ``PathManager`` (``model.onnx``, ``model.ts``, checkpoints) appear only once
  complete: a failed export leaves no 0-byte or partial file.

Where our keys cannot take effect the run stops (exit status 2) with a message naming the key and the fix, instead
of silently doing something else: a ``DefaultTrainer`` whose optimiser or schedule does not follow ``SOLVER.*``
(e.g. a subclass whose own ``build_optimizer`` builds SGD while ``SOLVER.OPTIMIZER`` is ``ADAMW``), and a model
built for ``MODEL.DEVICE cuda`` (Detectron2's default) where CUDA is not available (pass ``MODEL.DEVICE cpu``).
The script then runs as ``__main__`` with ``sys.argv = [TOOL.py, ARGS ...]``, as ``python TOOL.py ARGS`` would.
See docs/detectron2.md, "Detectron2's own tools".
"""
from __future__ import annotations

import functools
import os
import runpy
import sys
from typing import Callable, List, Optional

from .export import patch_export

__all__ = ["PATCHES", "install", "main", "rebind", "replace"]

_installed = False
_replacements: list = []  # (original, replacement) of every Detectron2 object replaced by install()


def replace(original, replacement) -> None:
    """Make every loaded ``detectron2.*`` module that holds ``original`` (under any name: ``detectron2.solver``,
    ``detectron2.engine.defaults``, ...) hold ``replacement`` instead, so that code importing it afterwards (a
    tool script's ``from detectron2.solver import build_optimizer``) gets ``replacement``. The module defining
    ``original`` keeps it (its own code, ``super()`` chains, still see Detectron2's object)."""
    for name, module in list(sys.modules.items()):
        if module is None or name == original.__module__ or not (name == "detectron2" or
                                                                 name.startswith("detectron2.")):
            continue
        for attr, value in list(vars(module).items()):
            if value is original:
                setattr(module, attr, replacement)
    _replacements.append((original, replacement))


def rebind(namespace: dict) -> None:
    """Point the names of ``namespace`` (a tool script's globals) that hold a replaced Detectron2 object at its
    replacement: for a script imported before :func:`install` ran."""
    for attr, value in list(namespace.items()):
        for original, replacement in _replacements:
            if value is original:
                namespace[attr] = replacement


def _patch_config() -> None:
    """``get_cfg()`` with our keys."""
    import detectron2.config as d2_config

    from .config import add_effvit_config

    original = d2_config.get_cfg

    def get_cfg():
        return add_effvit_config(original())

    get_cfg.__doc__ = original.__doc__
    replace(original, get_cfg)


def _patch_solver() -> None:
    """Our optimiser and schedules wherever Detectron2's tools and ``DefaultTrainer`` look them up."""
    import detectron2.solver as d2_solver

    from . import solver

    replace(d2_solver.build_optimizer, solver.build_optimizer)
    replace(d2_solver.build_lr_scheduler, solver.build_lr_scheduler)


def _patch_checkpointer() -> None:
    """``DetectionCheckpointer`` -> ``EffViTCheckpointer`` (a subclass: official files, safe loading)."""
    import detectron2.checkpoint as d2_checkpoint

    from .checkpoint import EffViTCheckpointer

    replace(d2_checkpoint.DetectionCheckpointer, EffViTCheckpointer)


def _patch_trainer() -> None:
    """``DefaultTrainer.__init__`` (and so every subclass's) checks what it built against our keys."""
    from detectron2.engine import DefaultTrainer

    from .solver import check_solver

    original = DefaultTrainer.__init__

    def __init__(self, cfg):
        original(self, cfg)
        check_solver(self.cfg, self.optimizer, self.scheduler, self.model, built_by=type(self).__qualname__)

    __init__.__doc__ = original.__doc__
    DefaultTrainer.__init__ = __init__


def _check_device(cfg) -> None:
    import torch

    from .config import ConfigNotHonouredError

    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigNotHonouredError(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} (Detectron2's default) but CUDA is not available here "
            "(torch.cuda.is_available() is False). Add `MODEL.DEVICE cpu` to the command line (after the script's "
            "options, with the other KEY VALUE overrides) to run on the CPU.")


def _patch_build_model() -> None:
    """``build_model(cfg)`` stops at once with the fix when ``MODEL.DEVICE`` is CUDA and there is none, and
    compiles the backbone with ``SOLVER.COMPILE.ENABLED``
    (:func:`effvit_plugins.detectron2.engine.compile_backbone`)."""
    import detectron2.modeling as d2_modeling

    original = d2_modeling.build_model

    def build_model(cfg):
        from .engine import compile_backbone

        _check_device(cfg)
        return compile_backbone(cfg, original(cfg))

    build_model.__doc__ = original.__doc__
    replace(original, build_model)


def _patch_ddp() -> None:
    """``create_ddp_model`` (``DefaultTrainer``, ``lazyconfig_train_net.py``) -> ours, which leaves ``device_ids``
    out for a model on the CPU: ``--num-gpus N`` then trains N CPU (gloo) processes."""
    import detectron2.engine.defaults as d2_defaults

    from .engine import create_ddp_model

    original = d2_defaults.create_ddp_model
    replace(original, create_ddp_model)
    d2_defaults.create_ddp_model = create_ddp_model  # (where DefaultTrainer.__init__ looks it up)


def _in_launched_process(main_func: Callable, *args):
    """What ``launch()`` runs: the patches in this process too (a process it spawned for ``--num-gpus N`` is a new
    interpreter that imported the tool script, as ``__main__``, before anything was patched), then the tool's
    ``main``."""
    install()
    rebind(vars(sys.modules["__main__"]))
    rebind(getattr(main_func, "__globals__", {}))  # (main may come from a module the script imported)
    return main_func(*args)


def _patch_launch() -> None:
    """``launch(main, ...)`` runs ``main`` through :func:`_in_launched_process`, in this and in spawned processes."""
    import detectron2.engine as d2_engine

    original = d2_engine.launch

    def launch(main_func, *args, **kwargs):
        return original(functools.partial(_in_launched_process, main_func), *args, **kwargs)

    launch.__doc__ = original.__doc__
    replace(original, launch)


# What install() applies, in order. A patch is a function of no arguments; add one by appending it here.
PATCHES: List[Callable[[], None]] = [_patch_config, _patch_solver, _patch_checkpointer, _patch_trainer,
                                     _patch_build_model, _patch_ddp, _patch_launch, patch_export]


def install() -> None:
    """Patch Detectron2 (idempotent, per process) so that its tools build, train and export our configs with our
    keys honoured (see the module docstring)."""
    global _installed
    if _installed:
        return
    # (importing this module imported effvit_plugins.detectron2, which registered our backbones and demo datasets)
    for patch in PATCHES:
        patch()
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
    from .config import ConfigNotHonouredError

    install()
    sys.argv = [tool] + argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(tool)))
    try:
        runpy.run_path(tool, run_name="__main__")
    except ConfigNotHonouredError as e:
        print(f"effvit_plugins.detectron2.run: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    # the module's importable copy, not this __main__ one: launch() pickles its functions by their module name
    from effvit_plugins.detectron2.run import main as _main

    _main()
