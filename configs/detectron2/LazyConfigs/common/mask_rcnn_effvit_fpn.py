# LazyConfig base of the effvit_plugins Mask R-CNN configs (the same model and recipe as
# ../../Base-EffViT-MaskRCNN-FPN.yaml): Detectron2's common Mask R-CNN + FPN model, COCO data (multi-scale
# 640-800 / 1333) and 1x schedule, with RGB input and ImageNet mean/std, AdamW lr 1e-4 / weight decay 0.05 without
# decay on norm layers and attention-bias tables, 1000-iteration warm-up, evaluation at the end of training (the
# yaml's TEST.EVAL_PERIOD 0). The per-variant files replace model.backbone.bottom_up (or model.backbone) with one of
# our Detectron2 backbones.
# Runs on the CPU when no GPU is present (train.device).
import torch
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver.build import get_default_optimizer_params

import effvit_plugins.detectron2  # noqa: F401  (registers the demo datasets)
from effvit_plugins.detectron2.solver import ATTENTION_BIAS_PARAMS

model = get_config("common/models/mask_rcnn_fpn.py").model
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.image_format = "RGB"

train = get_config("common/train.py").train
train.device = "cuda" if torch.cuda.is_available() else "cpu"
train.eval_period = 0  # evaluation after the last iteration only

lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x

optimizer = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(
        # params.model is set to the model by the training script
        base_lr="${..lr}",
        weight_decay_norm=0.0,
        overrides={name: {"weight_decay": 0.0} for name in ATTENTION_BIAS_PARAMS},
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.05,
)
