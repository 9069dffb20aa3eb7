# RetinaNet for backbones with maps of strides 16/32/64 (FamilySpec.upsample_neck, e.g. EfficientViT-MSRA): the
# official MSRA upsampling FPN (EfficientViTMSRAFPN) with one transposed-conv level (stride 8) and a stride-2 conv on
# the last backbone map (stride 128): strides 8-128.
_base_ = ['./retinanet_fpn.py']
model = dict(
    neck=dict(
        _delete_=True,
        type='EfficientViTMSRAFPN',
        in_channels=[],
        out_channels=256,
        start_level=0,
        num_outs=5,
        add_extra_convs='on_input',
        num_extra_trans_convs=1))
