# The official EfficientFormerV2 Mask R-CNN recipe (snap-research/EfficientFormer detection/configs/
# mask_rcnn_efficientformerv2_{s0,s1,s2,l}_fpn_1x_coco.py): the V1 recipe with weight decay 0.05.
_base_ = ['./efficientformer_adamw_1x.py']
optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
