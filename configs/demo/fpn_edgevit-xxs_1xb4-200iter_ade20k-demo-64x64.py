# Semantic FPN + EdgeViT-XXS on the synthetic ADE20K-layout demo set (tools/generate_demo_data.py --dataset ade20k
# -> data/ade_demo/ADEChallengeData2016/, 100 train / 20 val images of about 128x160, 10 of the 150 classes drawn).
# The full ADE20K config scaled down for a CPU: same model and 150 classes, pipelines at 1/4 of the ADE20K scale
# (random rescale 0.75-1.5 of short side 128, 64x64 crops, flip; test at short side 128, sides resized to multiples
# of 32), batch 4 on one device, the EfficientFormer recipe's AdamW at 10x the lr with a 10-iteration warm-up, poly
# decay over 200 iterations, validation and the checkpoint at the end. From scratch (no ImageNet weights), seed 0, on
# the 20 demo val images: 38.8 mIoU after 20 iterations, 56.2 after 100, 64.1 at the end (mean over the 10 classes
# the generator draws; the best constant prediction: 2.3); about 1 s/iter on 2 busy CPU cores (~4 min with validation).
#   python tools/generate_demo_data.py --dataset ade20k
#   python tools/train.py configs/demo/fpn_edgevit-xxs_1xb4-200iter_ade20k-demo-64x64.py
_base_ = ['../edgevit/fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py']

data_root = 'data/ade_demo/ADEChallengeData2016'
crop_size = (64, 64)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 200
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', eta_min=0.0, power=0.9, by_epoch=False, begin=10, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1, save_best=None),
    visualization=dict(type='SegVisualizationHook', interval=1),
)
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False)
