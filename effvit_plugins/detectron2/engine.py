"""Detectron2's ``DefaultTrainer`` for our configs: our optimiser and schedules, safe checkpoints, evaluators.

* ``build_optimizer`` / ``build_lr_scheduler``: :mod:`effvit_plugins.detectron2.solver` (AdamW with no weight
  decay on norms and attention biases, ``WarmupPolyLR``).
* checkpoints: :class:`~effvit_plugins.detectron2.checkpoint.EffViTCheckpointer` (official weight files through
  ``MODEL.WEIGHTS``; ``weights_only=True`` loading of its own checkpoints for ``--resume``).
* several processes (``tools/train_net.py --num-gpus N``): :func:`create_ddp_model` wraps a CPU model in
  ``DistributedDataParallel`` without ``device_ids`` (gloo processes), a CUDA model on the process's GPU.
* ``SOLVER.COMPILE.ENABLED``: the model's backbone is compiled with ``torch.compile`` (:func:`compile_backbone`).
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
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine.defaults import create_ddp_model as d2_create_ddp_model
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, LVISEvaluator, SemSegEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .checkpoint import EffViTCheckpointer
from .solver import build_lr_scheduler, build_optimizer

__all__ = ["Trainer", "compile_backbone", "create_ddp_model", "install_lvis_compat"]

logger = logging.getLogger(__name__)


def install_lvis_compat() -> None:
    """Make the ``lvis`` package's evaluation work on numpy >= 1.24 (:mod:`effvit_plugins.compat.lvis`)."""
    from ..compat.lvis import install

    install()


def create_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """Detectron2's ``create_ddp_model`` (the model itself in a single process, else ``DistributedDataParallel``)
    that also works for a model on the CPU: Detectron2 always passes ``device_ids=[local rank]``, which DDP refuses
    for CPU parameters; here ``device_ids`` is left out unless the parameters are on a CUDA device."""
    if comm.get_world_size() > 1 and "device_ids" not in kwargs:
        devices = {p.device.type for p in model.parameters()}
        if devices != {"cuda"}:
            kwargs["device_ids"] = None
    return d2_create_ddp_model(model, **kwargs)


def compile_backbone(cfg, model: torch.nn.Module) -> torch.nn.Module:
    """With ``SOLVER.COMPILE.ENABLED``, compile ``model.backbone`` (Detectron2's FPN around our backbone) in place
    with ``torch.compile(backend=SOLVER.COMPILE.BACKEND)`` (``nn.Module.compile``: parameter names and checkpoints
    unchanged; works before or after the ``DistributedDataParallel`` wrap) and return ``model``. The backbone is
    where the compute is and compiles as one graph per input size; Detectron2's heads (proposal sampling,
    box-dependent shapes) are left eager. Nothing happens when the key is off."""
    compile_cfg = getattr(cfg.SOLVER, "COMPILE", None)
    if compile_cfg is None or not compile_cfg.ENABLED:
        return model
    inner = getattr(model, "module", model)  # (DistributedDataParallel)
    backbone = getattr(inner, "backbone", None)
    if not isinstance(backbone, torch.nn.Module):
        from .config import ConfigNotHonouredError

        raise ConfigNotHonouredError(
            f"SOLVER.COMPILE.ENABLED is True but the model ({type(inner).__name__}) has no `backbone` module to "
            "compile. Set SOLVER.COMPILE.ENABLED False, or compile the model yourself.")
    backbone.compile(backend=compile_cfg.BACKEND)
    logger.info("torch.compile: %s compiled with backend %r (the first iterations of each input size are slow)",
                type(backbone).__name__, compile_cfg.BACKEND)
    return model


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with the effvit_plugins optimiser, schedules, checkpointer and evaluators, and
    ``DistributedDataParallel`` for CPU processes too (:func:`create_ddp_model`)."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__'s steps, in its order, with our DDP wrapper and checkpointer
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        loop = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = loop(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = EffViTCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_model(cls, cfg):
        return compile_backbone(cfg, super().build_model(cfg))

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
