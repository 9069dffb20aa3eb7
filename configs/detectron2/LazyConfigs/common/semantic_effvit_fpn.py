# LazyConfig base of the effvit_plugins Cityscapes Semantic FPN configs (the same model, data and recipe as
# ../../Base-EffViT-SemanticFPN.yaml): Detectron2's SemanticSegmentor with SemSegFPNHead over FPN P2-P5 (128
# channels, GroupNorm, output stride 4), 19 classes, 255 = ignore, RGB input with ImageNet mean/std; AdamW lr 2e-4,
# weight decay 1e-4 on every parameter, poly schedule (power 0.9) without warm-up, 40k iterations x 16 images,
# SemSegEvaluator (mIoU) every 5000 iterations. Training data as the yaml's DatasetMapper builds it: a random
# 512x1024 crop (Detectron2 puts INPUT.CROP before the resize), the short side resized to 512-2048 (max 4096), flips;
# test at 1024x2048. The per-variant files set model.backbone.bottom_up (or replace model.backbone with the
# upsampling FPN).
import torch
from detectron2.config import LazyCall as L
from detectron2.data import (DatasetMapper, build_detection_test_loader, build_detection_train_loader,
                             get_detection_dataset_dicts)
from detectron2.data import transforms as T
from detectron2.evaluation import SemSegEvaluator
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling import SemanticSegmentor
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler
from omegaconf import OmegaConf

import effvit_plugins.detectron2  # noqa: F401  (registers the demo datasets)
from effvit_plugins.detectron2.solver import ATTENTION_BIAS_PARAMS

model = L(SemanticSegmentor)(
    backbone=L(FPN)(
        bottom_up="???",  # set by the per-variant file
        in_features="${.bottom_up.out_features}",
        out_channels=256,
        top_block=L(LastLevelMaxPool)(),
    ),
    sem_seg_head=L(SemSegFPNHead)(
        input_shape={f"p{i}": L(ShapeSpec)(stride=2 ** i, channels="${....backbone.out_channels}")
                     for i in (2, 3, 4, 5)},
        num_classes=19,
        conv_dims=128,
        common_stride=4,
        loss_weight=1.0,
        norm="GN",
        ignore_value=255,
    ),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
)

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="cityscapes_fine_sem_seg_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.RandomCrop)(crop_type="absolute", crop_size=(512, 1024)),
            L(T.ResizeShortestEdge)(
                short_edge_length=(512, 768, 1024, 1280, 1536, 1792, 2048), max_size=4096, sample_style="choice",
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="RGB",
        use_instance_mask=False,
    ),
    total_batch_size=16,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="cityscapes_fine_sem_seg_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=1024, max_size=2048)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)
dataloader.evaluator = L(SemSegEvaluator)(dataset_name="${..test.dataset.names}")

train = get_config("common/train.py").train
train.max_iter = 40000
train.eval_period = 5000
train.device = "cuda" if torch.cuda.is_available() else "cpu"

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=0.9),
    warmup_length=0.0,
    warmup_factor=0.001,
)

optimizer = get_config("common/optim.py").AdamW
optimizer.lr = 2e-4
optimizer.betas = (0.9, 0.999)
optimizer.weight_decay = 1e-4
optimizer.params.weight_decay_norm = 1e-4
optimizer.params.overrides = {name: {"weight_decay": 1e-4} for name in ATTENTION_BIAS_PARAMS}
