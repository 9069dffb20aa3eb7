# LazyConfig base of the effvit_plugins RetinaNet configs (the same model and recipe as
# ../../Base-EffViT-RetinaNet.yaml): Detectron2's common RetinaNet (FPN P3-P7, 4-conv heads, focal loss, IoU 0.4/0.5)
# with the yaml's anchor sizes (x, x * 2**(1/3), x * 2**(2/3) to 5 decimals), smooth-L1 beta 0, RGB input with
# ImageNet mean/std; the data (multi-scale 640-800 / 1333, no masks loaded), optimiser (AdamW lr 1e-4, weight decay
# 0.05 without decay on norm layers and attention-bias tables), 1x schedule and 1000-iteration warm-up of the Mask
# R-CNN base. The per-variant files replace model.backbone.bottom_up and set the P6/P7 input (or replace
# model.backbone with the upsampling FPN).
from detectron2.model_zoo import get_config

import effvit_plugins.detectron2  # noqa: F401  (registers the demo datasets)

from .mask_rcnn_effvit_fpn import dataloader, lr_multiplier, optimizer, train

model = get_config("common/models/retinanet.py").model
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"
model.anchor_generator.sizes = [[x, round(x * 2 ** (1 / 3), 5), round(x * 2 ** (2 / 3), 5)]
                               for x in (32, 64, 128, 256, 512)]
model.smooth_l1_beta = 0.0
model.backbone.in_features = "${.bottom_up.out_features}"

dataloader.train.mapper.use_instance_mask = False
