"""docs/CONTRIBUTING_MODELS.md, proved: a sixth model family defined here from ONE spec -- a tiny conv net with a
variant table, no file of the package edited -- passes the backbone contract, is registered in mmseg / mmdet /
mmpretrain and in Detectron2 (backbone, FPN and RetinaNet builders), loads its "official" checkpoint layout, and
gets its configs from the config generator in a dry run; the generated configs build and run in each framework."""
import os
import pickle
import sys

import pytest
import torch
import torch.nn as nn

from effvit_plugins.models.base import BackboneBase, resolve_arch
from effvit_plugins.models.spec import FamilySpec, Paper, families, register_family, unregister_family

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the family: all a contributor writes for a new family (docs/CONTRIBUTING_MODELS.md, steps 1 and 3) ----
TOY_ARCH_SETTINGS = {
    "t0": dict(widths=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    "t1": dict(widths=(8, 16, 32, 48), depths=(1, 1, 2, 1)),
}


def _conv_bn_act(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ToyNetBackbone(BackboneBase):
    """A tiny conv net (stem stride 2, four stride-2 stages: strides 4-32) with the backbone contract."""

    FAMILY = "ToyNet"

    def __init__(self, arch=None, in_channels=3, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
                 with_cp=False):
        super().__init__()
        cfg = resolve_arch(arch, TOY_ARCH_SETTINGS, self.FAMILY)
        widths, depths = cfg["widths"], cfg["depths"]
        self.stem = _conv_bn_act(in_channels, widths[0], 2)
        self.stages = nn.ModuleList()
        prev = widths[0]
        for w, d in zip(widths, depths):
            blocks = [_conv_bn_act(prev, w, 2)] + [_conv_bn_act(w, w, 1) for _ in range(d - 1)]
            self.stages.append(nn.Sequential(*blocks))
            prev = w
        self.init_contract(widths, [4, 8, 16, 32], [f"stages.{i}" for i in range(4)], in_channels, out_indices,
                           frozen_stages, norm_eval, with_cp)

    def stem_modules(self):
        return [self.stem]

    def stage_modules(self):
        return list(self.stages)

    def feature_steps(self):
        return [[self.stem, self.stages[0]]] + [[s] for s in self.stages[1:]]


class ToyNetClsHead(nn.Module):
    def __init__(self, in_channels, num_classes=1000):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, feats):
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return self.fc(self.norm(x).mean((2, 3)))


def toy_convert(state_dict):
    """"Official" layout: ``features.*`` / ``classifier.*`` -> ``backbone.*`` / ``head.*``."""
    if any(k.startswith("backbone.") for k in state_dict):
        return dict(state_dict)
    return {("backbone." + k[len("features."):] if k.startswith("features.") else "head." + k[len("classifier."):]): v
            for k, v in state_dict.items()}


TOY_SPEC = FamilySpec(
    key="toynet", title="ToyNet", name="ToyNet", config_folder="toynet", config_prefix="toynet",
    backbone=ToyNetBackbone, cls_head=ToyNetClsHead, arch_settings=TOY_ARCH_SETTINGS, feature_strides=(4, 8, 16, 32),
    convert=toy_convert, key_signature=("features.stem.0.weight", "classifier.fc.weight"),
    paper=Paper(authors="Nobody et al.", venue="a test", arxiv="0000.00000", title="ToyNet", code="none/toynet"))


def register_detectron2_builders():
    """Step 3 of the guide: the family's three Detectron2 builders, written out, each a call into shared code."""
    from effvit_plugins.detectron2 import (build_effvit_backbone, build_effvit_fpn_backbone,
                                           build_effvit_retinanet_fpn_backbone, register_backbone)

    @register_backbone
    def build_toynet_backbone(cfg, input_shape):
        return build_effvit_backbone(cfg, input_shape, "toynet")

    @register_backbone
    def build_toynet_fpn_backbone(cfg, input_shape):
        return build_effvit_fpn_backbone(cfg, input_shape, "toynet")

    @register_backbone
    def build_toynet_retinanet_fpn_backbone(cfg, input_shape):
        return build_effvit_retinanet_fpn_backbone(cfg, input_shape, "toynet")

    return ["build_toynet_backbone", "build_toynet_fpn_backbone", "build_toynet_retinanet_fpn_backbone"]


@pytest.fixture(scope="module")
def toy():
    import effvit_plugins  # noqa: F401  (OpenMMLab registration)
    import effvit_plugins.detectron2  # noqa: F401  (Detectron2 backbone classes)
    from detectron2.modeling import BACKBONE_REGISTRY

    spec = register_family(TOY_SPEC)
    builders = register_detectron2_builders()
    yield spec
    unregister_family(spec.key)
    for name in builders:
        BACKBONE_REGISTRY._obj_map.pop(name)
    assert "toynet" not in [s.key for s in families()]


def test_contract(toy, tmp_path):
    from effvit_plugins.testing import check_backbone_contract

    assert toy in families()
    for variant in toy.variants:
        check_backbone_contract(toy, variant, tmp_path=tmp_path)


def test_registered_in_every_openmmlab_library(toy):
    from mmdet.registry import MODELS as DET
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS as PRETRAIN
    from mmseg.registry import MODELS as SEG

    from effvit_plugins.mm.backbones import ToyNet
    from effvit_plugins.mm.cls_heads import ToyNetClsHead
    from effvit_plugins.registry import MODELS as OWN

    for reg in (DET, SEG, PRETRAIN, OWN):
        with DefaultScope.overwrite_default_scope(reg.scope):  # (another test may have set another default scope)
            bb = reg.build(dict(type="ToyNet", arch="t1", out_indices=(1, 3)))
        assert type(bb) is ToyNet and isinstance(bb, ToyNetBackbone)
        assert [o.shape[1:] for o in bb(torch.zeros(1, 3, 64, 64))] == [(16, 8, 8), (48, 2, 2)]
    with DefaultScope.overwrite_default_scope("mmpretrain"):
        head = PRETRAIN.build(dict(type="ToyNetClsHead", in_channels=48, num_classes=5))
    assert type(head) is ToyNetClsHead and head((torch.zeros(2, 48, 2, 2),)).shape == (2, 5)


def test_official_layout_loads(toy, tmp_path):
    from effvit_plugins.convert import detect_family
    from effvit_plugins.registry import MODELS as OWN

    src = ToyNetBackbone("t0")
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    official = {"features." + k: v for k, v in src.state_dict().items()}
    official.update({"classifier." + k: v for k, v in ToyNetClsHead(32, 10).state_dict().items()})
    assert detect_family(official) == "toynet"
    path = tmp_path / "toynet_t0_official.pth"
    torch.save(official, path)
    bb = OWN.build(dict(type="ToyNet", arch="t0", init_cfg=dict(type="Pretrained", checkpoint=str(path))))
    bb.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(bb.state_dict()[k], v), k


def test_detectron2_builders(toy):
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import BACKBONE_REGISTRY

    from effvit_plugins.detectron2 import D2ToyNet, add_effvit_config

    cfg = add_effvit_config(get_cfg())
    cfg.MODEL.EFFVIT.FAMILY, cfg.MODEL.EFFVIT.ARCH = "toynet", "t0"
    x = torch.zeros(1, 3, 128, 128)
    expected = {"build_toynet_backbone": ["res2", "res3", "res4", "res5"],
                "build_toynet_fpn_backbone": ["p2", "p3", "p4", "p5", "p6"],
                "build_toynet_retinanet_fpn_backbone": ["p3", "p4", "p5", "p6", "p7"]}
    for name, maps in expected.items():
        cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"] if "retinanet" in name else ["res2", "res3", "res4", "res5"]
        model = BACKBONE_REGISTRY.get(name)(cfg, ShapeSpec(channels=3))
        assert type(getattr(model, "bottom_up", model)) is D2ToyNet and D2ToyNet.__module__ == \
            "effvit_plugins.detectron2.backbone"
        out = model(x)
        assert list(out) == list(model.output_shape()) == maps
        assert [out[m].shape[-1] for m in maps] == [128 // model.output_shape()[m].stride for m in maps]
    again = pickle.loads(pickle.dumps(model))
    assert torch.equal(again(x)["p7"], model(x)["p7"])
    cfg.MODEL.EFFVIT.ARCH = ""
    with pytest.raises(ValueError, match="MODEL.EFFVIT.ARCH is not set; the ToyNet variants are: t0, t1"):
        BACKBONE_REGISTRY.get("build_toynet_backbone")(cfg, None)


def test_spec_strides_must_match_feature_info(toy):
    """A spec whose feature_strides disagree with what its backbone builds is refused when the backbone is built."""
    import dataclasses

    from effvit_plugins.detectron2 import backbone_class

    class WrongStrides(ToyNetBackbone):
        pass

    wrong = register_family(dataclasses.replace(toy, key="toynet_wrong", name="ToyNetWrong", backbone=WrongStrides,
                                                feature_strides=(2, 4, 8, 16)))
    try:
        with pytest.raises(ValueError, match=r"strides \[4, 8, 16, 32\] \(feature_info\), but its FamilySpec "
                                             r"declares feature_strides=\(2, 4, 8, 16\)\. Correct"):
            backbone_class("toynet_wrong")("t0")
    finally:
        unregister_family(wrong.key)


# ---- the generated configs (dry run: nothing is written into the repository) ----------------------------------
def _overlay(tmp_root, files):
    """``tmp_root`` mirrors the repository's configs/ (entries symlinked) plus ``files`` ({repo path: text}), so that
    the generated configs' relative bases resolve as they would in the repository."""
    for rel, text in files.items():
        parts = os.path.dirname(rel).split(os.sep)
        for depth in range(1, len(parts) + 1):
            sub = os.path.join(*parts[:depth])
            os.makedirs(tmp_root / sub, exist_ok=True)
            src = os.path.join(ROOT, sub)
            for entry in os.listdir(src) if os.path.isdir(src) else []:
                if not os.path.lexists(tmp_root / sub / entry) and os.path.join(sub, entry) not in \
                        [os.path.join(*p.split(os.sep)[:depth + 1]) for p in files]:
                    os.symlink(os.path.join(src, entry), tmp_root / sub / entry)
        (tmp_root / rel).write_text(text)


@pytest.fixture(scope="module")
def toy_configs(toy, tmp_path_factory):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import configgen
    finally:
        sys.path.remove(os.path.join(ROOT, "scripts"))
    files = configgen.configs([toy])
    assert not any(os.path.exists(os.path.join(ROOT, rel)) for rel in files), "a dry run writes nothing"
    assert configgen.readme_paths([toy]) == ["configs/toynet/README.md"]
    tmp = tmp_path_factory.mktemp("toy_configs")
    _overlay(tmp, files)
    return tmp, files


def test_generator_dry_run_makes_every_kind_of_config(toy_configs):
    _, files = toy_configs
    names = {os.path.basename(p) for p in files}
    for v in TOY_SPEC.variants:
        assert {f"toynet-{v}_8xb256_in1k.py", f"retinanet_toynet-{v}_fpn_8xb2-1x_coco.py",
                f"mask-rcnn_toynet-{v}_fpn_8xb2-1x_coco.py", f"fpn_toynet-{v}_8xb4-40k_ade20k-512x512.py",
                f"mask_rcnn_toynet_{v}_fpn_1x.yaml", f"retinanet_toynet_{v}_fpn_1x.yaml"} <= names
    assert "mask-rcnn_toynet-t0_fpn_sample1e-3_8xb2-ms-1x_lvis-v1.py" in names  # det_variant: the first variant


@pytest.mark.parametrize("kind,scope", [("_in1k.py", "mmpretrain"), ("mask-rcnn_toynet-t0_fpn_8xb2-1x_coco.py", "mmdet"),
                                        ("retinanet_toynet-t0_fpn_8xb2-1x_coco.py", "mmdet"),
                                        ("fpn_toynet-t0_8xb4-40k_ade20k-512x512.py", "mmseg")])
def test_generated_openmmlab_configs_build_and_run(toy_configs, kind, scope):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    tmp, files = toy_configs
    rel = next(p for p in sorted(files) if p.startswith("configs/toynet/") and p.endswith(kind))
    cfg = Config.fromfile(str(tmp / rel))
    init_default_scope(scope)
    registry = __import__(f"{scope}.registry", fromlist=["MODELS"]).MODELS
    model = registry.build(cfg.model).eval()
    assert isinstance(model.backbone, ToyNetBackbone)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        if scope == "mmdet":  # the whole detector, post-processing included
            from mmdet.structures import DetDataSample

            meta = dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64), batch_input_shape=(64, 64),
                        scale_factor=(1.0, 1.0))
            out = model(x, [DetDataSample(metainfo=meta)], mode="predict")
            assert "bboxes" in out[0].pred_instances
        else:
            out = model(x, mode="tensor")
            assert out.shape[:2] == ((1, 1000) if scope == "mmpretrain" else (1, 150))


def test_generated_detectron2_configs_build_and_run(toy_configs):
    from detectron2.config import LazyConfig, get_cfg, instantiate
    from detectron2.modeling import build_model

    from effvit_plugins.detectron2 import add_effvit_config

    tmp, files = toy_configs
    image = [{"image": torch.zeros(3, 64, 64), "height": 64, "width": 64}]
    yamls = [p for p in sorted(files) if p.endswith(".yaml") and "_t0_" in p]
    assert len(yamls) == 4  # COCO Mask R-CNN, RetinaNet, LVIS, Cityscapes semantic FPN
    for rel in yamls:
        cfg = add_effvit_config(get_cfg())
        cfg.merge_from_file(str(tmp / rel))
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg).eval()
        with torch.no_grad():
            assert model(image)[0], rel
    lazies = [p for p in sorted(files) if "LazyConfigs" in p and "_t0_" in p]
    assert [os.path.relpath(p, "configs/detectron2/LazyConfigs")[:-3] for p in lazies] == \
        [os.path.relpath(p, "configs/detectron2")[:-5] for p in yamls]  # a LazyConfig twin of each
    for rel in lazies:
        cfg = LazyConfig.load(str(tmp / rel))
        cfg.model.backbone.bottom_up.size_divisibility = 32
        model = instantiate(cfg.model).eval()
        with torch.no_grad():
            assert {"instances", "sem_seg"} & set(model(image)[0]), rel
