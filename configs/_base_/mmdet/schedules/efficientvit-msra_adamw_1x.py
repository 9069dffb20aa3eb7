# The official EfficientViT-MSRA detection recipe (microsoft/Cream EfficientViT/downstream/configs/
# {retinanet,mask_rcnn}_efficientvit_m4_fpn_1x_coco.py): AdamW lr 1e-4, wd 0.05 without decay on the attention-bias
# tables, 12 epochs with lr x0.1 after epochs 8 and 11, linear warm-up over 500 iterations from 0.001, 8 GPUs x 2
# images. (The official config also lists attention_bias_idxs, a buffer that is never optimised.)
_base_ = ['./adamw_1x.py']
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'attention_biases': dict(decay_mult=0.)}))
