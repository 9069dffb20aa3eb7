"""mmpretrain ImageNet configs of every family: keys match the converter output, published params/MACs,
conversion of official files, clear errors, and a real training loop + accuracy evaluation."""
import glob
import os

import pytest
import torch

from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config, model_complexity
from effvit_plugins.models import efficientformer_v1
from effvit_plugins.models.spec import families
from effvit_plugins.utils.published import official_complexity

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLS_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*", "*_in1k.py")))
# (params M, MACs G) at 224 of the official classifiers, measured from the official code
# (effvit_plugins/data/published_results.json, the file tools/paper_tables.py prints)
TARGETS = {name.split("_")[0]: (p.value, m.value) for name, (p, m) in official_complexity("classification").items()}
# config-name prefix ('efficientvit-msra') -> spec, for the families with an ImageNet classifier
CLASSIFIER_FAMILIES = [s for s in families() if s.classifier is not None]
SPEC_OF = {s.config_prefix: s for s in CLASSIFIER_FAMILIES}


def model_name(path):
    return os.path.basename(path).split("_")[0]


def split_name(name):
    prefix, variant = name.rsplit("-", 1)
    return prefix, variant


def test_every_variant_has_a_config():
    assert sorted(model_name(p) for p in CLS_CONFIGS) == sorted(TARGETS)


@pytest.mark.parametrize("path", CLS_CONFIGS, ids=model_name)
def test_config_matches_official_classifier(path):
    """Params/MACs as published, and exactly the keys of the converted official checkpoint."""
    cfg = load_config(path)
    with torch.device("meta"):
        model = build_model_from_cfg(cfg, device="meta")
        prefix, variant = split_name(model_name(path))
        core = SPEC_OF[prefix].classifier(variant)
    params, macs = model_complexity(model, (224, 224))
    p_ref, m_ref = TARGETS[model_name(path)]
    assert abs(params / 1e6 - p_ref) / p_ref < 0.01 and abs(macs / 1e9 - m_ref) / m_ref < 0.02, (params, macs)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official_layout = {k: tuple(v.shape) for k, v in core.state_dict().items()}
    assert ours == official_layout


# every classifier family, its smallest variant, in each wrapper the official releases use
CONVERT_CASES = [(f"{s.config_prefix}-{s.variants[0]}", ("state_dict", "model", None)[i % 3])
                 for i, s in enumerate(CLASSIFIER_FAMILIES)]


@pytest.mark.parametrize("name,wrapper", CONVERT_CASES, ids=[n for n, _ in CONVERT_CASES])
def test_official_checkpoint_converts_into_config(tmp_path, name, wrapper, bn_randomizer, official_classifier_layout):
    import importlib.util
    spec = importlib.util.spec_from_file_location("cc", os.path.join(ROOT, "tools", "convert_checkpoint.py"))
    cc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cc)
    prefix, variant = split_name(name)
    spec = SPEC_OF[prefix]
    torch.manual_seed(0)
    core = spec.classifier(variant).eval()
    bn_randomizer(core)
    official = official_classifier_layout(spec.key, core)
    if spec.key == "efficientvit_msra":  # official 1x1 conv weights may be stored 2-D
        official = {k: (v.flatten(1) if k.endswith(".c.weight") and v.dim() == 4 and v.shape[-1] == 1 else v)
                    for k, v in official.items()}
    torch.save({wrapper: official} if wrapper else official, tmp_path / "official.pth")
    assert cc.main([str(tmp_path / "official.pth"), str(tmp_path / "ours.pth")]) == 0
    (path,) = [p for p in CLS_CONFIGS if model_name(p) == name]
    model = build_model_from_cfg(load_config(path))
    res = model.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True)["state_dict"], strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x, mode="tensor"), core(x), atol=1e-5)


def test_checkpoint_of_another_family_is_named(tmp_path, official_classifier_layout):
    from mmpretrain.registry import MODELS
    official = official_classifier_layout("efficientformer_v1", efficientformer_v1.EfficientFormerV1Classifier("l1"))
    torch.save({"model": official}, tmp_path / "ef_official.pth")
    bb = MODELS.build(dict(type="EfficientViTMSRA", arch="m0",
                           init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "ef_official.pth"))))
    with pytest.raises(Exception, match=r"looks like a EfficientFormer V1 checkpoint, but the model is EfficientViT \(MSRA\)"):
        bb.init_weights()


def test_truncated_checkpoint_loads_nothing(tmp_path, official_classifier_layout):
    from mmpretrain.registry import MODELS
    spec = CLASSIFIER_FAMILIES[0]
    core = spec.classifier(spec.variants[0])
    torch.save({"model": official_classifier_layout(spec.key, core)}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    bb = MODELS.build(dict(type=spec.name, arch=spec.variants[0],
                           init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "trunc.pth"))))
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    with pytest.raises(Exception, match="truncated or corrupt"):
        bb.init_weights()
    assert all(torch.equal(v, before[k]) for k, v in bb.state_dict().items())


@pytest.mark.parametrize("spec", families(), ids=lambda s: s.key)
def test_unknown_variant_lists_valid_ones(spec):
    from mmpretrain.registry import MODELS
    with pytest.raises(ValueError, match=f"Valid variants: {', '.join(spec.arch_settings)}"):
        MODELS.build(dict(type=spec.name, arch="zz"))


# ------------------------------------------------------------------------------------------------------------
TRAIN_CASES = [f"{s.config_prefix}-{s.variants[0]}" for s in CLASSIFIER_FAMILIES]


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    from effvit_plugins.datasets.imagefolder_demo import generate_imagefolder

    return generate_imagefolder(str(tmp_path_factory.mktemp("imagefolder")), num_train=8, num_val=4, size=64)


@pytest.mark.parametrize("name", TRAIN_CASES)
def test_training_loop_and_accuracy(tmp_path, imagefolder, name):
    """32 iterations through mmengine's Runner (mmpretrain ImageClassifier, seed 0): the loss falls and the val
    accuracy is well above chance (4 classes: 25%).

    BatchNorm's running statistics are exponential averages over the past iterations, whose weights changed a lot
    in so short a run: evaluated with them, EfficientViT-B0 predicts a single class (25%, with the loss already
    low). mmpretrain's PreciseBNHook recomputes the statistics with the final weights on 32 training images (4
    forward passes) before the evaluation, as long ImageNet recipes do.
    """
    from mmengine.runner import Runner

    from effvit_plugins.datasets.imagefolder_demo import CLASSES

    (path,) = [p for p in CLS_CONFIGS if model_name(p) == name]
    cfg = load_config(path)
    cfg.model.head.num_classes = len(CLASSES)
    cfg.model.head.topk = (1,)
    cfg.model.data_preprocessor = dict(type="ClsDataPreprocessor", num_classes=len(CLASSES),
                                       mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
    pipe = [dict(type="LoadImageFromFile"), dict(type="PackInputs")]
    for split, key in (("train", "train_dataloader"), ("val", "val_dataloader")):
        cfg[key] = dict(batch_size=8, num_workers=0, persistent_workers=False,
                        sampler=dict(type="DefaultSampler", shuffle=split == "train"),
                        dataset=dict(type="CustomDataset", data_root=imagefolder, data_prefix=split, pipeline=pipe))
    cfg.val_evaluator = dict(type="Accuracy", topk=(1,))
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    iters = 32
    cfg.train_cfg = dict(by_epoch=False, max_iters=iters, val_interval=iters)
    cfg.optim_wrapper = dict(optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.0))
    cfg.param_scheduler = []
    cfg.auto_scale_lr = None
    cfg.randomness = dict(seed=0)
    cfg.custom_hooks = [dict(type="PreciseBNHook", num_samples=32, interval=iters, priority="ABOVE_NORMAL")]
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=8)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=iters, by_epoch=False)
    cfg.log_processor = dict(by_epoch=False)
    cfg.work_dir = str(tmp_path / "work")
    runner = Runner.from_cfg(cfg)
    runner.train()  # validation at the last iteration, after the precise-BN pass
    losses = runner.message_hub.get_scalar("train/loss").data[0]
    assert len(losses) == iters and all(map(lambda v: v == v, losses))
    # the model learns: mean loss of the last 8 iterations well below that of the first 8
    assert losses[-8:].mean() < 0.8 * losses[:8].mean(), losses
    accuracy = runner.message_hub.get_scalar("val/accuracy/top1").current()
    chance = 100.0 / len(CLASSES)
    assert accuracy > 2 * chance, accuracy
    assert os.path.isfile(os.path.join(cfg.work_dir, f"iter_{iters}.pth"))


@pytest.mark.parametrize("spec", CLASSIFIER_FAMILIES, ids=lambda s: s.key)
def test_dense_backbone_loads_official_imagenet_file(tmp_path, spec, official_classifier_layout):
    """init_cfg=Pretrained with the *original* official file (converted on load) into an mmdet backbone."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope("mmdet")
    variant = spec.variants[0]
    core = spec.classifier(variant)
    torch.save({"model": official_classifier_layout(spec.key, core)}, tmp_path / "official.pth")
    bb = MODELS.build(dict(type=spec.name, arch=variant, out_indices=spec.dense_indices(),
                           init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "official.pth"))))
    bb.init_weights()
    ref = {k[len("backbone."):]: v for k, v in core.state_dict().items() if k.startswith("backbone.")}
    own = bb.state_dict()
    same = [k for k in ref if k in own and own[k].shape == ref[k].shape]
    assert len(same) >= 0.95 * len(ref)
    assert all(torch.equal(own[k], ref[k]) for k in same)
    outs = bb(torch.randn(1, 3, 256, 256))
    assert all(torch.isfinite(o).all() for o in outs)
