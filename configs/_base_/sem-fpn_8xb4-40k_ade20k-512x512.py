# Semantic FPN on ADE20K 512x512 with the EfficientFormer recipe (8 GPUs x 4 images, AdamW, poly, 40k iterations):
# everything but the backbone, which configs/<family>/fpn_*_ade20k-512x512.py add (with the neck's in_channels).
_base_ = [
    './models/sem-fpn.py',
    './datasets/ade20k_512x512_align32.py',
    './default_runtime.py',
    './schedules/adamw_poly_40k.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor, decode_head=dict(num_classes=150))
