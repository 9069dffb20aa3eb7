# LVIS v1 instance segmentation: the COCO settings with multi-scale training (shorter side 640-800, longer <= 1333),
# class-balanced repeat sampling (ClassBalancedDataset, oversample_thr 1e-3) and LVISMetric (box + mask AP,
# APr/APc/APf). Layout under data_root: annotations/lvis_v1_{train,val}.json and the COCO 2017 images train2017/,
# val2017/ (LVIS v1 locates each image by its coco_url). Elsewhere: --cfg-options
# train_dataloader.dataset.dataset.data_root=/path/to/lvis/ {val,test}_dataloader.dataset.data_root=/path/to/lvis/
# {val,test}_evaluator.ann_file=/path/to/lvis/annotations/lvis_v1_val.json (or `ln -s /path/to/lvis data/lvis_v1`).
_base_ = ['./coco_instance.py']
dataset_type = 'LVISV1Dataset'
data_root = 'data/lvis_v1/'
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize',
         scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',
        oversample_thr=1e-3,
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            ann_file='annotations/lvis_v1_train.json',
            data_prefix=dict(img=''),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline=train_pipeline,
            backend_args={{_base_.backend_args}})))
val_dataloader = dict(
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/lvis_v1_val.json',
                 data_prefix=dict(img='')))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='LVISMetric', ann_file=data_root + 'annotations/lvis_v1_val.json',
                     metric=['bbox', 'segm'], backend_args={{_base_.backend_args}})
test_evaluator = val_evaluator
