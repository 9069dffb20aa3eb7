# The official EfficientFormer (V1) Mask R-CNN recipe (snap-research/EfficientFormer detection/configs/
# mask_rcnn_efficientformer_l{1,3,7}_fpn_1x_coco.py): AdamW lr 2e-4, wd 1e-4, 12 epochs with lr x0.1 after epochs 8
# and 11, linear warm-up over 500 iterations from 1e-6, 8 GPUs x 2 images.
_base_ = ['./adamw_1x.py']
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0002, betas=(0.9, 0.999), weight_decay=0.0001))
