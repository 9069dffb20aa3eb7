# The main job: EfficientViT-B1 + SegHead on Cityscapes at 1024x2048 (paper setting; official 80.547 mIoU).
# Optimiser/schedule: the official segmentation training code and recipe were never released
# (mit-han-lab/efficientvit #49, #165). We use AdamW (the optimiser the paper uses) lr 2e-4, wd 0.05 (no decay on
# norms/biases), 1500-iter linear warm-up then cosine decay over 160k iterations, batch 8x2, 1024x1024 crops of
# images randomly rescaled 0.5-2.0x around 2048x1024 -- mmseg's standard Cityscapes recipe. To start from ImageNet
# weights, set model.backbone.init_cfg=dict(type='Pretrained', checkpoint='efficientvit_b1_r224.pt') (the official
# file, converted on load).
_base_ = ['./efficientvit_mit/efficientvit-seghead_efficientvit-b1_8xb2-160k_cityscapes-1024x2048.py']
