# EfficientViT (MIT) backbone + official SegHead in an mmseg EncoderDecoder. Defaults: B1 / Cityscapes.
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(type='EfficientViTMIT', arch='b1', out_indices=(2, 3, 4), frozen_stages=-1, norm_eval=False,
                  init_cfg=None),
    decode_head=dict(
        type='EfficientViTMITSegHead',
        in_channels=[256, 128, 64],
        in_index=[2, 1, 0],
        head_width=64,
        head_depth=3,
        expand_ratio=4,
        middle_op='mbconv',
        final_expand=4,
        act='hswish',
        norm_eps=1e-5,
        num_classes=19,
        dropout_ratio=0.0,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
