# RetinaNet with an EdgeViT XXS backbone, trained from scratch on the synthetic COCO-layout demo set
#   (tools/generate_demo_data.py --dataset coco -> data/coco_demo/; circles, squares and triangles as 'sports ball',
#   'tv' and 'kite') on a CPU in a few minutes.
# The COCO config (retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py) scaled down: 128x128 images, the three classes,
#   64-channel neck and heads (GroupNorm in the head), fewer proposals, BatchNorm statistics trained (no ImageNet
#   weights), 300 iterations of AdamW lr 1e-3, evaluation and checkpoint at the end.
# Train / test it like the Mask R-CNN demo: tools/train.py CONFIG, tools/test.py CONFIG CHECKPOINT.
# Hand-written (not generated; see configs/README.md).
_base_ = [
    '../_base_/mmdet/models/retinanet_fpn.py',
    '../_base_/mmdet/datasets/coco_demo_128x128.py',
    '../_base_/mmdet/schedules/demo_300iter.py',
    '../_base_/mmdet/default_runtime.py',
]
model = dict(
    backbone=dict(type='EdgeViT', arch='xxs', out_indices=(1, 2, 3), norm_eval=False),
    neck=dict(in_channels=[72, 144, 288], out_channels=64),
    # GroupNorm in the head: without ImageNet weights the plain head needs far more iterations
    bbox_head=dict(in_channels=64, feat_channels=64, num_classes=3,
                   norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    test_cfg=dict(max_per_img=20))
val_evaluator = dict(metric='bbox')
test_evaluator = dict(metric='bbox')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000000, save_last=True, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=10)
