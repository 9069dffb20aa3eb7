"""Helpers shared by our command-line tools (config loading, model building, complexity)."""
from __future__ import annotations

from typing import Optional, Tuple



def load_config(path: str, cfg_options: Optional[dict] = None, launcher: Optional[str] = None,
                work_dir: Optional[str] = None, set_work_dir: bool = False):
    """Config.fromfile + ``--cfg-options`` (+ for train/test: launcher and work_dir = CLI > config >
    ``./work_dirs/<config name>``, as mmseg's tools). Imports effvit_plugins first (registration, compat)."""
    import os.path as osp

    import effvit_plugins  # noqa: F401  (register our modules before the config's custom_imports run)
    from mmengine.config import Config

    cfg = Config.fromfile(path)
    if launcher is not None:
        cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif set_work_dir and cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(path))[0])
    return cfg


def build_model_from_cfg(cfg, device: str = "cpu"):
    """Build ``cfg.model`` in its default scope, with SyncBN reverted for single-process use."""
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope, init_default_scope

    scope = cfg.get("default_scope", "mmseg")
    if DefaultScope.get_current_instance() is None or DefaultScope.get_current_instance().scope_name != scope:
        init_default_scope(scope)
    model = MODELS.build(cfg.model)
    model = revert_sync_batchnorm(model)
    return model.to(device).eval()


def model_complexity(model, shape: Tuple[int, int], device: str = "meta"):
    """(params, MACs) of ``model(x, mode='tensor')`` (segmentors: decode-head logits; classifiers: logits)."""
    from effvit_plugins.utils.complexity import count_macs, count_params

    params = count_params(model)
    macs = count_macs(model, (1, 3) + tuple(shape), device=device,
                      forward=lambda m, x: m(x, mode="tensor") if _has_mode(m) else m(x))
    return params, macs


def _has_mode(model) -> bool:
    from mmengine.model import BaseModel

    return isinstance(model, BaseModel)
