# EfficientViT-B0 + SegHead on the synthetic Cityscapes-layout demo set (tools/generate_demo_data.py ->
# data/cityscapes_demo/, 100 train / 20 val images of 128x256). The full Cityscapes B0 config scaled down to run
# on a laptop CPU in a few minutes: same model and 19 classes, pipelines at 1/8 of the Cityscapes resolution
# (random rescale 0.75-1.5 of 256x128, 128x128 crops, flip), batch 4 on one device, plain BN (the model has no
# SyncBN), AdamW at 10x the lr with a 30-iter warm-up and cosine decay over 500 iterations, validation and the
# checkpoint at the end. From scratch (no ImageNet weights), seed 0: 72.15 mIoU on the demo val set (mean over the
# 10 classes the generator draws; poles/signs stay at 0), ~0.1 s/iter on 2 CPU cores (~1.5-2.5 min of training).
# `make demo` (scripts/demo.sh) = generate the data, tools/train.py with this config, tools/test.py --show-dir.
_base_ = ['../efficientvit_mit/efficientvit-seghead_efficientvit-b0_8xb2-160k_cityscapes-1024x2048.py']

data_root = 'data/cityscapes_demo/'
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
img_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale_factor=r, keep_ratio=True) for r in img_ratios],
                     [dict(type='RandomFlip', prob=0., direction='horizontal'),
                      dict(type='RandomFlip', prob=1., direction='horizontal')],
                     [dict(type='LoadAnnotations')],
                     [dict(type='PackSegInputs')]]),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 500
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', T_max=max_iters - 30, eta_min=1e-5, by_epoch=False, begin=30, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=2, save_best=None),
    visualization=dict(type='SegVisualizationHook', interval=1),
)
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False)
