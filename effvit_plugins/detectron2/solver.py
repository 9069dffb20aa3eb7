"""Optimiser and learning-rate schedule for the effvit_plugins Detectron2 configs.

* :func:`build_optimizer`: ``SOLVER.OPTIMIZER`` ``"ADAMW"`` (what these transformer backbones are trained with) or
  ``"SGD"``, with Detectron2's parameter groups (``get_default_optimizer_params``: ``WEIGHT_DECAY_NORM`` for every
  norm layer, ``WEIGHT_DECAY_BIAS``, ``BIAS_LR_FACTOR``) plus ``WEIGHT_DECAY_ATTN_BIAS`` for the attention-bias
  tables, and Detectron2's gradient clipping (``SOLVER.CLIP_GRADIENTS``).
* :func:`build_lr_scheduler`: Detectron2's schedules plus ``"WarmupPolyLR"`` (``SOLVER.POLY_LR_POWER``).
* :func:`check_solver`: stop when an optimiser or schedule built by other code (a ``DefaultTrainer`` subclass's own
  ``build_optimizer``) does not follow these keys, instead of training with a silently different optimiser.
"""
from __future__ import annotations

import torch
from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from .config import ConfigNotHonouredError

__all__ = ["ATTENTION_BIAS_PARAMS", "OPTIMIZER_CLASSES", "WarmupPolyLR", "build_optimizer", "build_lr_scheduler",
           "check_solver", "optimizer_param_groups"]

# parameter names (last component) of the relative-position attention-bias tables of the cores
ATTENTION_BIAS_PARAMS = ("attention_biases", "attention_biases_seg")
# SOLVER.OPTIMIZER -> the optimiser class build_optimizer builds (Detectron2's gradient clipping subclasses it)
OPTIMIZER_CLASSES = {"SGD": torch.optim.SGD, "ADAMW": torch.optim.AdamW}


class WarmupPolyLR(LRMultiplier):
    """``SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"``: Detectron2's ``LRMultiplier`` with the warm-up followed by
    ``(1 - iter / MAX_ITER) ** SOLVER.POLY_LR_POWER`` (its own class, so that :func:`check_solver` can tell it from
    another schedule)."""


def optimizer_param_groups(cfg, model: torch.nn.Module) -> list:
    """Detectron2's parameter groups with no weight decay (``SOLVER.WEIGHT_DECAY_ATTN_BIAS``) on attention biases."""
    return get_default_optimizer_params(
        model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR, weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        overrides={name: {"weight_decay": cfg.SOLVER.WEIGHT_DECAY_ATTN_BIAS} for name in ATTENTION_BIAS_PARAMS})


def _optimizer_name(cfg) -> str:
    name = str(cfg.SOLVER.OPTIMIZER).upper()
    if name not in OPTIMIZER_CLASSES:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {', '.join(OPTIMIZER_CLASSES)}, got "
                         f"{cfg.SOLVER.OPTIMIZER!r}.")
    return name


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` over :func:`optimizer_param_groups` (``SOLVER.BASE_LR``, ``WEIGHT_DECAY``, ``BETAS`` or
    ``MOMENTUM`` / ``NESTEROV``), with Detectron2's gradient clipping when enabled."""
    name = _optimizer_name(cfg)
    params = optimizer_param_groups(cfg, model)
    if name == "ADAMW":
        opt = torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS),
                                weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    else:
        opt = torch.optim.SGD(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                              nesterov=cfg.SOLVER.NESTEROV, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    return maybe_add_gradient_clipping(cfg, opt)


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """Detectron2's ``build_lr_scheduler``, plus ``SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"``."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return d2_build_lr_scheduler(cfg, optimizer)
    sched = WarmupParamScheduler(PolynomialDecayParamScheduler(1.0, cfg.SOLVER.POLY_LR_POWER),
                                 cfg.SOLVER.WARMUP_FACTOR, min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0),
                                 cfg.SOLVER.WARMUP_METHOD, cfg.SOLVER.RESCALE_INTERVAL)
    return WarmupPolyLR(optimizer, multiplier=sched, max_iter=cfg.SOLVER.MAX_ITER)


def check_solver(cfg, optimizer: torch.optim.Optimizer, scheduler, model: torch.nn.Module, built_by: str) -> None:
    """Raise :class:`ConfigNotHonouredError` when ``optimizer`` / ``scheduler`` (built by ``built_by``, e.g.
    ``"MyTrainer"``) do not follow our keys: the class ``SOLVER.OPTIMIZER`` names, ``SOLVER.BETAS`` (AdamW),
    ``SOLVER.WEIGHT_DECAY_ATTN_BIAS`` on every attention-bias table of ``model``, and
    ``SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"``. Detectron2's own keys (learning rate, momentum, ...) are not
    checked: a trainer overriding ``build_optimizer`` may set them as it likes, as without the launcher."""
    fix = (f"Remove {built_by}.{{method}} (effvit_plugins.detectron2.run makes DefaultTrainer build what the config "
           f"says), make it return effvit_plugins.detectron2.{{method}}(cfg, ...), or change {{key}} to what it "
           "builds.")
    name = _optimizer_name(cfg)
    expected = OPTIMIZER_CLASSES[name]
    if not isinstance(optimizer, expected):
        raise ConfigNotHonouredError(
            f"SOLVER.OPTIMIZER is {cfg.SOLVER.OPTIMIZER!r} ({expected.__module__}.{expected.__qualname__}) but "
            f"{built_by}.build_optimizer built {type(optimizer).__name__}: training would silently use another "
            "optimiser. " + fix.format(method="build_optimizer", key="SOLVER.OPTIMIZER"))
    betas = tuple(float(b) for b in cfg.SOLVER.BETAS)
    if name == "ADAMW":
        for group in optimizer.param_groups:
            if tuple(float(b) for b in group["betas"]) != betas:
                raise ConfigNotHonouredError(
                    f"SOLVER.BETAS is {betas} but {built_by}.build_optimizer built AdamW with betas "
                    f"{tuple(group['betas'])}. " + fix.format(method="build_optimizer", key="SOLVER.BETAS"))
    bias_ids = {id(p): n for n, p in model.named_parameters() if n.rpartition(".")[2] in ATTENTION_BIAS_PARAMS}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) in bias_ids and group["weight_decay"] != cfg.SOLVER.WEIGHT_DECAY_ATTN_BIAS:
                raise ConfigNotHonouredError(
                    f"SOLVER.WEIGHT_DECAY_ATTN_BIAS is {cfg.SOLVER.WEIGHT_DECAY_ATTN_BIAS} but {built_by}."
                    f"build_optimizer gives the attention-bias table {bias_ids[id(p)]} weight decay "
                    f"{group['weight_decay']}. " + fix.format(method="build_optimizer",
                                                              key="SOLVER.WEIGHT_DECAY_ATTN_BIAS"))
    if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR" and not isinstance(scheduler, WarmupPolyLR):
        raise ConfigNotHonouredError(
            f"SOLVER.LR_SCHEDULER_NAME is 'WarmupPolyLR' but {built_by}.build_lr_scheduler built "
            f"{type(scheduler).__name__}. " + fix.format(method="build_lr_scheduler", key="SOLVER.LR_SCHEDULER_NAME"))
