# Cityscapes as mmseg's standard recipe (the Semantic FPN / most mmseg Cityscapes models): random scale 0.5-2.0 of
# 2048x1024, 512x1024 crops, 2 images per GPU; test: the full 1024x2048 images.
_base_ = ['./cityscapes_1024x2048.py']
crop_size = (512, 1024)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
