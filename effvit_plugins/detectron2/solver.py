"""Optimiser and learning-rate schedule for the effvit_plugins Detectron2 configs.

* :func:`build_optimizer`: ``SOLVER.OPTIMIZER`` ``"ADAMW"`` (what these transformer backbones are trained with) or
  ``"SGD"``, with Detectron2's parameter groups (``get_default_optimizer_params``: ``WEIGHT_DECAY_NORM`` for every
  norm layer, ``WEIGHT_DECAY_BIAS``, ``BIAS_LR_FACTOR``) plus ``WEIGHT_DECAY_ATTN_BIAS`` for the attention-bias
  tables, and Detectron2's gradient clipping (``SOLVER.CLIP_GRADIENTS``).
* :func:`build_lr_scheduler`: Detectron2's schedules plus ``"WarmupPolyLR"`` (``SOLVER.POLY_LR_POWER``).
"""
from __future__ import annotations

import torch
from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

__all__ = ["ATTENTION_BIAS_PARAMS", "build_optimizer", "build_lr_scheduler", "optimizer_param_groups"]

# parameter names (last component) of the relative-position attention-bias tables of the cores
ATTENTION_BIAS_PARAMS = ("attention_biases", "attention_biases_seg")
OPTIMIZERS = ("SGD", "ADAMW")


def optimizer_param_groups(cfg, model: torch.nn.Module) -> list:
    """Detectron2's parameter groups with no weight decay (``SOLVER.WEIGHT_DECAY_ATTN_BIAS``) on attention biases."""
    return get_default_optimizer_params(
        model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR, weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        overrides={name: {"weight_decay": cfg.SOLVER.WEIGHT_DECAY_ATTN_BIAS} for name in ATTENTION_BIAS_PARAMS})


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` over :func:`optimizer_param_groups` (``SOLVER.BASE_LR``, ``WEIGHT_DECAY``, ``BETAS`` or
    ``MOMENTUM`` / ``NESTEROV``), with Detectron2's gradient clipping when enabled."""
    name = str(cfg.SOLVER.OPTIMIZER).upper()
    params = optimizer_param_groups(cfg, model)
    if name == "ADAMW":
        opt = torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS),
                                weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    elif name == "SGD":
        opt = torch.optim.SGD(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                              nesterov=cfg.SOLVER.NESTEROV, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {', '.join(OPTIMIZERS)}, got {cfg.SOLVER.OPTIMIZER!r}.")
    return maybe_add_gradient_clipping(cfg, opt)


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """Detectron2's ``build_lr_scheduler``, plus ``SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"``."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return d2_build_lr_scheduler(cfg, optimizer)
    sched = WarmupParamScheduler(PolynomialDecayParamScheduler(1.0, cfg.SOLVER.POLY_LR_POWER),
                                 cfg.SOLVER.WARMUP_FACTOR, min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0),
                                 cfg.SOLVER.WARMUP_METHOD, cfg.SOLVER.RESCALE_INTERVAL)
    return LRMultiplier(optimizer, multiplier=sched, max_iter=cfg.SOLVER.MAX_ITER)
