# ImageNet-1k at 224 with the evaluation preprocessing of models evaluated at crop_pct 1.0:
# short side 224 (bicubic, pillow), centre crop 224.
_base_ = ['./imagenet_224.py']
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=224, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
