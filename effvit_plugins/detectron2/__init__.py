"""Detectron2 adapter: every family as a Detectron2 backbone, with its config keys, optimiser, checkpointer and
trainer. Needs Detectron2 (and not mmcv / mmdet / OpenMMLab).

``import effvit_plugins.detectron2`` registers the backbone builders in Detectron2's ``BACKBONE_REGISTRY``
(``build_<family>_backbone``, ``build_<family>_fpn_backbone``, ``build_<family>_retinanet_fpn_backbone``) and the
generated demo datasets in its ``DatasetCatalog``. Typical use (what ``tools/train_net.py`` does)::

    from detectron2.config import get_cfg
    from effvit_plugins.detectron2 import Trainer, add_effvit_config

    cfg = add_effvit_config(get_cfg())
    cfg.merge_from_file("configs/detectron2/COCO-InstanceSegmentation/mask_rcnn_efficientvit_mit_b1_fpn_1x.yaml")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)   # MODEL.WEIGHTS may be an official checkpoint file
    trainer.train()
"""
from .backbone import (BACKBONE_CLASSES, D2EdgeViT, D2EfficientFormerV1, D2EfficientFormerV2, D2EfficientViTMIT,
                       D2EfficientViTMSRA, UpsampleFPNBackbone, build_effvit_backbone, build_effvit_fpn_backbone,
                       build_effvit_retinanet_fpn_backbone, feature_name)
from .checkpoint import EffViTCheckpointer, load_d2_checkpoint
from .config import add_effvit_config
from .data import DatasetMissingError, check_datasets, register_demo_datasets
from .engine import Trainer
from .solver import build_lr_scheduler, build_optimizer

__all__ = ["BACKBONE_CLASSES", "D2EdgeViT", "D2EfficientFormerV1", "D2EfficientFormerV2", "D2EfficientViTMIT",
           "D2EfficientViTMSRA", "DatasetMissingError", "EffViTCheckpointer", "Trainer", "UpsampleFPNBackbone",
           "add_effvit_config", "build_effvit_backbone", "build_effvit_fpn_backbone",
           "build_effvit_retinanet_fpn_backbone", "build_lr_scheduler", "build_optimizer", "check_datasets",
           "feature_name", "load_d2_checkpoint", "register_demo_datasets"]
