"""Helpers shared by our command-line tools (config loading, distributed start-up, model building, complexity)."""
from __future__ import annotations

import os
import sys
from typing import Optional, Tuple


class UsageError(RuntimeError):
    """A problem the user fixes on the command line or in the config; the tools print it as one ``error:`` line."""


def fail(msg: str, code: int = 2):
    """Print ``error: msg`` to stderr (once, from the first process of a distributed job) and exit with ``code``."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)

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


def accelerator_available() -> bool:
    """A device mmengine's launchers select themselves (CUDA, Ascend NPU, MLU, MUSA)."""
    from mmengine import device

    checks = [getattr(device, n, None) for n in ("is_cuda_available", "is_npu_available", "is_mlu_available",
                                                 "is_musa_available")]
    return any(c() for c in checks if c is not None)


def setup_distributed(cfg) -> None:
    """Start ``torch.distributed`` for ``cfg.launcher`` on a machine without GPU, where mmengine 0.10.7 cannot.

    mmengine's launchers call ``torch.cuda.set_device`` unconditionally and its ``Runner.wrap_model`` gives DDP
    ``device_ids=[LOCAL_RANK]``; both fail when the model is on the CPU. With a GPU (or NPU/MLU/MUSA) nothing is
    changed. Without one, with ``env_cfg.dist_cfg.backend='gloo'`` and the pytorch launcher (torchrun), the
    process group is initialised here (mmengine's Runner then finds it initialised and keeps it) and the DDP
    wrapper is configured without ``device_ids``. Any other combination raises :class:`UsageError` saying what
    to change (the configs' default backend, 'nccl', needs CUDA).
    """
    launcher = cfg.get("launcher", "none")
    if launcher == "none" or accelerator_available():
        return
    import datetime

    import torch.distributed as dist

    dist_cfg = dict((cfg.get("env_cfg") or {}).get("dist_cfg") or {})
    backend = dist_cfg.pop("backend", "nccl")
    cpu_hint = "--cfg-options env_cfg.dist_cfg.backend=gloo"
    if backend != "gloo":
        raise UsageError(
            f"--launcher {launcher} with env_cfg.dist_cfg.backend='{backend}' needs a GPU, but this machine has none "
            f"(torch.cuda.is_available() is False). To train on CPUs use the gloo backend: add {cpu_hint}")
    if launcher != "pytorch":
        raise UsageError(
            f"--launcher {launcher} needs a GPU in mmengine 0.10.7 (its {launcher} launcher selects a CUDA device). "
            f"On CPUs start the processes with torchrun: torchrun --nproc_per_node N tools/train.py CONFIG "
            f"--launcher pytorch {cpu_hint}")
    missing = [v for v in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise UsageError(
            f"--launcher pytorch expects the environment that torchrun sets ({', '.join(missing)} not set). Run: "
            f"torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch {cpu_hint}")
    if cfg.get("sync_bn"):
        raise UsageError(f"sync_bn='{cfg.sync_bn}' needs a GPU (SyncBatchNorm runs on GPUs only); "
                         f"train on CPUs without it: --cfg-options sync_bn=None")
    init_backend = dist_cfg.pop("init_backend", "torch")
    if init_backend != "torch":
        raise UsageError(f"env_cfg.dist_cfg.init_backend='{init_backend}' needs a GPU; on CPUs use 'torch'")
    if dist_cfg.get("timeout") is not None:  # seconds in mmengine's configs
        dist_cfg["timeout"] = datetime.timedelta(seconds=dist_cfg["timeout"])
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", **dist_cfg)

    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel

    wrapper = dict(cfg.get("model_wrapper_cfg") or dict(
        type="MMDistributedDataParallel", broadcast_buffers=False,
        find_unused_parameters=cfg.get("find_unused_parameters", False)))
    wrapper_cls = wrapper.get("type", "MMDistributedDataParallel")
    if isinstance(wrapper_cls, str):
        wrapper_cls = MODEL_WRAPPERS.get(wrapper_cls)
    if isinstance(wrapper_cls, type) and issubclass(wrapper_cls, DistributedDataParallel):
        wrapper["device_ids"] = None  # a CPU module: DDP refuses device ids
    cfg.model_wrapper_cfg = wrapper


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
