"""Detectron2's ``DefaultTrainer`` for our configs: our optimiser and schedules, safe checkpoints, evaluators.

* ``build_optimizer`` / ``build_lr_scheduler``: :mod:`effvit_plugins.detectron2.solver` (AdamW with no weight
  decay on norms and attention biases, ``WarmupPolyLR``).
* checkpoints: :class:`~effvit_plugins.detectron2.checkpoint.EffViTCheckpointer` (official weight files through
  ``MODEL.WEIGHTS``; ``weights_only=True`` loading of its own checkpoints for ``--resume``).
* evaluators by the dataset's ``evaluator_type``: ``coco`` -> ``COCOEvaluator``, ``lvis`` -> ``LVISEvaluator``
  (with ``TEST.DETECTIONS_PER_IMAGE`` detections per image, and the ``np.float`` fix of the ``lvis`` package),
  ``sem_seg`` and ``cityscapes_sem_seg`` -> ``SemSegEvaluator`` (Detectron2's Cityscapes evaluators import an
  internal module that does not exist outside Meta, detectron2 issue #5436).
"""
from __future__ import annotations

import logging
import os
import weakref

import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, LVISEvaluator, SemSegEvaluator

from .checkpoint import EffViTCheckpointer
from .solver import build_lr_scheduler, build_optimizer

__all__ = ["Trainer", "install_lvis_compat"]

logger = logging.getLogger(__name__)


def install_lvis_compat() -> None:
    """Make the ``lvis`` package's evaluation work on numpy >= 1.24 (:mod:`effvit_plugins.compat.lvis`)."""
    from ..compat.lvis import install

    install()


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with the effvit_plugins optimiser, schedules, checkpointer and evaluators."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.checkpointer = EffViTCheckpointer(self._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        for h in self._hooks:
            if isinstance(h, hooks.PeriodicCheckpointer):
                h.checkpointer = self.checkpointer

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        kind = MetadataCatalog.get(dataset_name).get("evaluator_type")
        if kind == "coco":
            evaluator = COCOEvaluator(dataset_name, output_dir=output_folder,
                                      max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)
        elif kind == "lvis":
            install_lvis_compat()
            evaluator = LVISEvaluator(dataset_name, output_dir=output_folder,
                                      max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)
        elif kind in ("sem_seg", "cityscapes_sem_seg"):
            evaluator = SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)
        else:
            raise NotImplementedError(
                f"No evaluator for dataset {dataset_name!r} (evaluator_type {kind!r}); tools/train_net.py evaluates "
                "'coco', 'lvis', 'sem_seg' and 'cityscapes_sem_seg' datasets.")
        return DatasetEvaluators([evaluator])

    @staticmethod
    def describe(cfg, model: torch.nn.Module) -> str:
        """One line: backbone, parameters, device (logged at the start of training / evaluation)."""
        n = sum(p.numel() for p in model.parameters())
        return (f"model {cfg.MODEL.META_ARCHITECTURE} with {cfg.MODEL.BACKBONE.NAME} "
                f"({cfg.MODEL.EFFVIT.FAMILY or '-'} {cfg.MODEL.EFFVIT.ARCH or ''}): {n / 1e6:.2f}M parameters, "
                f"device {cfg.MODEL.DEVICE}")
