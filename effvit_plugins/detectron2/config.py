"""Detectron2 (yacs) config keys of the effvit_plugins backbones and optimiser.

``add_effvit_config(cfg)`` must be called on a ``get_cfg()`` node before merging one of our YAML files (Detectron2's
convention for project keys, like ``add_deeplab_config``); ``tools/train_net.py`` does it.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = ["ConfigNotHonouredError", "add_effvit_config"]


class ConfigNotHonouredError(RuntimeError):
    """A config key that the run cannot honour (e.g. ``SOLVER.OPTIMIZER`` when a trainer builds another optimiser,
    ``MODEL.DEVICE cuda`` without CUDA under :mod:`effvit_plugins.detectron2.run`): the run stops instead of
    silently doing something else."""


def add_effvit_config(cfg: CN) -> CN:
    """Add the effvit_plugins keys (with their defaults) to ``cfg`` in place and return it.

    ``MODEL.EFFVIT``:

    * ``FAMILY``: a family key (:func:`effvit_plugins.models.spec.family_keys`: ``efficientvit_mit``, ...); must
      match the family of ``MODEL.BACKBONE.NAME`` (``build_<family>_backbone``, ``build_<family>_fpn_backbone``,
      ``build_<family>_retinanet_fpn_backbone``); empty = the builder's family.
    * ``ARCH``: the variant, a name of the family's variant table (``FamilySpec.arch_settings``: ``b1``, ``m4``,
      ``xs``, ...).
    * ``OUT_FEATURES``: maps returned by the backbone, ``res{log2(stride)}`` (``res2`` = stride 4); empty = every
      map of stride >= 4 (a family with the upsampling neck, EfficientViT-MSRA: ``res4``, ``res5``, ``res6``).
    * ``FROZEN_STAGES``: -1 nothing, 0 the stem, k the stem and the first k stages (mmdet's meaning;
      Detectron2's ``MODEL.BACKBONE.FREEZE_AT`` is not used by these backbones).
    * ``NORM_EVAL``: keep every BatchNorm in eval mode while training (statistics fixed).
    * ``DROP_PATH_RATE``: stochastic depth (not for EfficientViT-MIT, which has none).
    * ``WITH_CP``: gradient checkpointing (the backbone's ``with_cp``, OpenMMLab's name; timm's
      ``set_grad_checkpointing``): each block is recomputed in the backward pass instead of keeping its activations,
      for large inputs (e.g. 1024x2048) at about one more forward of compute.
    * ``SEG_RESOLUTION``: EfficientFormer only: build the official dense-prediction attention-bias tables for this
      resolution (V1: side of the stride-32 token grid, official 25 for detection / 16 for segmentation; V2:
      image side in pixels, official 800 / 512); 0 keeps the ImageNet tables.
    * ``LAYER_SCALE_INIT_VALUE``: EfficientFormer only: initial layer scale (official 1e-5, L7 detection 1e-6);
      0 = the family default.

    ``SOLVER`` (used by :func:`effvit_plugins.detectron2.solver.build_optimizer`):

    * ``OPTIMIZER``: ``"SGD"`` (Detectron2's default, with ``MOMENTUM`` / ``NESTEROV``) or ``"ADAMW"``.
    * ``BETAS``: AdamW betas.
    * ``WEIGHT_DECAY_ATTN_BIAS``: weight decay of the attention-bias tables (``attention_biases``,
      ``attention_biases_seg``); like Detectron2's ``WEIGHT_DECAY_NORM`` (0.0 by default) for norm layers.
    * ``POLY_LR_POWER``: the ``"WarmupPolyLR"`` schedule (``SOLVER.LR_SCHEDULER_NAME``, after the usual warm-up):
      ``lr = BASE_LR * (1 - iter / MAX_ITER) ** POLY_LR_POWER``.
    * ``COMPILE.ENABLED``: ``torch.compile`` the model's backbone (ours with its FPN: one graph per input size,
      :func:`effvit_plugins.detectron2.engine.compile_backbone`), like ``SOLVER.AMP.ENABLED`` a switch of the
      training run; ``COMPILE.BACKEND``: the ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` to check
      the capture without code generation).
    """
    cfg.MODEL.EFFVIT = CN()
    cfg.MODEL.EFFVIT.FAMILY = ""
    cfg.MODEL.EFFVIT.ARCH = ""
    cfg.MODEL.EFFVIT.OUT_FEATURES = []
    cfg.MODEL.EFFVIT.FROZEN_STAGES = -1
    cfg.MODEL.EFFVIT.NORM_EVAL = False
    cfg.MODEL.EFFVIT.DROP_PATH_RATE = 0.0
    cfg.MODEL.EFFVIT.WITH_CP = False
    cfg.MODEL.EFFVIT.SEG_RESOLUTION = 0
    cfg.MODEL.EFFVIT.LAYER_SCALE_INIT_VALUE = 0.0

    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    cfg.SOLVER.WEIGHT_DECAY_ATTN_BIAS = 0.0
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.COMPILE = CN()
    cfg.SOLVER.COMPILE.ENABLED = False
    cfg.SOLVER.COMPILE.BACKEND = "inductor"
    return cfg
