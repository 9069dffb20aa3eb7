# mmdet's standard AdamW 1x recipe for transformer backbones (as mmdet's Swin-T Mask R-CNN 1x): AdamW lr 1e-4,
# wd 0.05 without decay on normalisation layers and attention-bias tables, linear warm-up over 1000 iterations,
# 12 epochs with lr x0.1 after epochs 8 and 11, 8 GPUs x 2 images. Configs with an official recipe override the
# optimiser and the warm-up. For another total batch size: --cfg-options auto_scale_lr.enable=True.
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'attention_biases': dict(decay_mult=0.)}))
auto_scale_lr = dict(enable=False, base_batch_size=16)
