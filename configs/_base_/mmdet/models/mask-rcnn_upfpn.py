# Mask R-CNN for backbones with maps of strides 16/32/64 (FamilySpec.upsample_neck, e.g. EfficientViT-MSRA): the
# official MSRA upsampling FPN (EfficientViTMSRAFPN) with two transposed-conv levels (strides 4 and 8): strides 4-64.
_base_ = ['./mask-rcnn_fpn.py']
model = dict(
    neck=dict(
        _delete_=True,
        type='EfficientViTMSRAFPN',
        in_channels=[],
        out_channels=256,
        start_level=0,
        num_outs=5,
        num_extra_trans_convs=2))
