"""Detectron2 adapter: every family as a Detectron2 backbone, with its config keys, optimiser, checkpointer and
trainer. Needs Detectron2 (and not mmcv / mmdet / OpenMMLab).

``import effvit_plugins.detectron2`` registers the backbone builders in Detectron2's ``BACKBONE_REGISTRY``
(``build_<family>_backbone``, ``build_<family>_fpn_backbone``, ``build_<family>_retinanet_fpn_backbone``, written
out in :mod:`.builders`) and the generated demo datasets in its ``DatasetCatalog``. The backbone class of each
registered family, ``D2<name>`` (``D2EfficientViTMIT``, ``D2EdgeViT``, ...), is importable from here; see
:func:`backbone_class`. Typical use (what ``tools/train_net.py`` does)::

    from detectron2.config import get_cfg
    from effvit_plugins.detectron2 import Trainer, add_effvit_config

    cfg = add_effvit_config(get_cfg())
    cfg.merge_from_file("configs/detectron2/COCO-InstanceSegmentation/mask_rcnn_efficientvit_mit_b1_fpn_1x.yaml")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)   # MODEL.WEIGHTS may be an official checkpoint file
    trainer.train()
"""
from ..models.spec import families
from . import backbone as _backbone
from .backbone import (UpsampleFPNBackbone, backbone_class, build_effvit_backbone, build_effvit_fpn_backbone,
                       build_effvit_retinanet_fpn_backbone, feature_name)
from .builders import register_backbone
from .checkpoint import EffViTCheckpointer, load_d2_checkpoint
from .config import add_effvit_config
from .data import DatasetMissingError, check_datasets, fed_loss_weights, register_demo_datasets
from .engine import Trainer
from .solver import build_lr_scheduler, build_optimizer

__all__ = ["DatasetMissingError", "EffViTCheckpointer", "Trainer", "UpsampleFPNBackbone", "add_effvit_config",
           "backbone_class", "build_effvit_backbone", "build_effvit_fpn_backbone",
           "build_effvit_retinanet_fpn_backbone", "build_lr_scheduler", "build_optimizer", "check_datasets",
           "fed_loss_weights", "feature_name", "load_d2_checkpoint", "register_backbone", "register_demo_datasets"]
__all__ += [spec.d2_name for spec in families()]


def __getattr__(name: str):
    """``D2<name>``: the Detectron2 backbone class of a registered family (made by :mod:`.backbone`), also for a
    family registered after this import."""
    if name.startswith("D2") and hasattr(_backbone, name):
        return getattr(_backbone, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
