# ADE20K as in the EfficientFormer Semantic FPN recipe (segmentation/configs/_base_/datasets/ade20k.py there):
# mmseg's ADE20K training pipeline with 4 images per GPU; test: short side 512, then both sides resized to the
# next multiple of 32 (the official AlignResize; mmseg's ResizeToMultiple). Predictions are resized back to the
# original image size for evaluation.
_base_ = ['./ade20k_512x512.py']
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=4)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
