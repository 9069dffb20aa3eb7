# Training from scratch on the demo set on a CPU: 300 iterations, AdamW lr 1e-3 (wd 0.05, none on norms), gradient
# clipping, 20-iter linear warm-up then cosine decay; evaluation at the end.
max_iters = 300
warmup_iters = 20
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', T_max=max_iters - warmup_iters, eta_min=1e-5, by_epoch=False,
         begin=warmup_iters, end=max_iters),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.001, betas=(0.9, 0.999), weight_decay=0.05, foreach=True),
    paramwise_cfg=dict(norm_decay_mult=0.),
    clip_grad=dict(max_norm=10.0))
randomness = dict(seed=0)
