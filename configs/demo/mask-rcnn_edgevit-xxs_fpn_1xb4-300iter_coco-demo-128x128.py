# Mask R-CNN with an EdgeViT XXS backbone, trained from scratch on the synthetic COCO-layout demo set
#   (tools/generate_demo_data.py --dataset coco -> data/coco_demo/; circles, squares and triangles as 'sports ball',
#   'tv' and 'kite') on a CPU in a few minutes.
# The COCO config (mask-rcnn_edgevit-xxs_fpn_8xb2-1x_coco.py) scaled down: 128x128 images, the three classes,
#   64-channel neck and heads, fewer proposals, BatchNorm statistics trained (no ImageNet weights), 300 iterations
#   of AdamW lr 1e-3, evaluation and checkpoint at the end.
# `make demo-det` runs the Mask R-CNN one (scripts/demo_det.sh).
# Hand-written (not generated; see configs/README.md).
_base_ = [
    '../_base_/mmdet/models/mask-rcnn_fpn.py',
    '../_base_/mmdet/datasets/coco_demo_128x128.py',
    '../_base_/mmdet/schedules/demo_300iter.py',
    '../_base_/mmdet/default_runtime.py',
]
model = dict(
    backbone=dict(type='EdgeViT', arch='xxs', out_indices=(0, 1, 2, 3), norm_eval=False),
    neck=dict(in_channels=[36, 72, 144, 288], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=3)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=200), rcnn=dict(max_per_img=20)))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000000, save_last=True, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=10)
