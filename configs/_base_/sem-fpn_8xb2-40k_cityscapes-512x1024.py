# Semantic FPN on Cityscapes (512x1024 crops, full 1024x2048 test) with the EfficientFormer optimiser and schedule
# (8 GPUs x 2 images, AdamW, poly, 40k iterations): everything but the backbone, which
# configs/<family>/fpn_*_cityscapes-512x1024.py add (with the neck's in_channels).
_base_ = [
    './models/sem-fpn.py',
    './datasets/cityscapes_512x1024.py',
    './default_runtime.py',
    './schedules/adamw_poly_40k.py',
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor, decode_head=dict(num_classes=19))
