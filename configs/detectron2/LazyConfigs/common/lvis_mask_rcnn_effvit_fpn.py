# LazyConfig base of the effvit_plugins LVIS v1 Mask R-CNN configs (the same model and recipe as
# ../../Base-EffViT-LVIS-MaskRCNN-FPN.yaml): the COCO Mask R-CNN base (mask_rcnn_effvit_fpn.py) with Detectron2's
# LVIS v1 settings -- 1203 classes, repeat-factor sampling (threshold 1e-3), federated sigmoid classification loss
# (50 sampled classes, frequency weight power 0.5, weights from the training set's class image counts), up to 300
# detections per image down to score 1e-4, LVISEvaluator, 180k iterations x 16 images with lr x0.1 at 120k and 160k.
from detectron2.config import LazyCall as L
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.evaluation import LVISEvaluator
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from effvit_plugins.detectron2 import fed_loss_weights
from effvit_plugins.detectron2.engine import install_lvis_compat

from .mask_rcnn_effvit_fpn import dataloader, model, optimizer, train

install_lvis_compat()  # the lvis package's evaluation on numpy >= 1.24 (np.float)

dataloader.train.dataset.names = "lvis_v1_train"
dataloader.train.sampler = L(RepeatFactorTrainingSampler)(
    repeat_factors=L(RepeatFactorTrainingSampler.repeat_factors_from_category_frequency)(
        dataset_dicts="${dataloader.train.dataset}", repeat_thresh=0.001, sqrt=True,
    ),
)
dataloader.test.dataset.names = "lvis_v1_val"
dataloader.evaluator = L(LVISEvaluator)(dataset_name="${..test.dataset.names}", max_dets_per_image=300)

model.roi_heads.num_classes = 1203
model.roi_heads.box_predictor.test_score_thresh = 0.0001
model.roi_heads.box_predictor.test_topk_per_image = 300
model.roi_heads.box_predictor.use_sigmoid_ce = True
model.roi_heads.box_predictor.use_fed_loss = True
model.roi_heads.box_predictor.fed_loss_num_classes = 50
model.roi_heads.box_predictor.get_fed_loss_cls_weights = L(fed_loss_weights)(
    dataset_names="${dataloader.train.dataset.names}", freq_weight_power=0.5,
)

train.max_iter = 180000
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[120000, 160000, 180000]),
    warmup_length=1000 / train.max_iter,
    warmup_method="linear",
    warmup_factor=0.001,
)
