"""Detectron2 backbones of every family and variant: named maps, shapes, strides, padding, frozen stages, norm_eval,
with_cp, the registered builders, the config keys, the optimiser groups, equality with the mmdet backbones, an
import without OpenMMLab, and a family registered at run time."""
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY

from effvit_plugins.detectron2 import add_effvit_config, backbone_class, build_optimizer
from effvit_plugins.mm.necks import EfficientViTMSRAFPN
from effvit_plugins.models import spec as family_spec
from effvit_plugins.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAMILIES = family_spec.families()
KEYS = [s.key for s in FAMILIES]
VARIANTS = [(s.key, v) for s in FAMILIES for v in s.arch_settings]


def smallest(family):
    """The family's first official variant (the smallest)."""
    return family_spec.get_family(family).variants[0]


def effvit_cfg(family, arch, **effvit):
    cfg = add_effvit_config(get_cfg())
    cfg.MODEL.EFFVIT.FAMILY = family
    cfg.MODEL.EFFVIT.ARCH = arch
    for k, v in effvit.items():
        setattr(cfg.MODEL.EFFVIT, k, v)
    return cfg


def build(kind, cfg, family):
    cfg.MODEL.BACKBONE.NAME = f"build_{family}{kind}_backbone"
    return BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, ShapeSpec(channels=3))


@pytest.mark.parametrize("family,arch", VARIANTS, ids=[f"{f}-{v}" for f, v in VARIANTS])
def test_every_variant_names_shapes_and_strides(family, arch):
    """Default maps res2..res5 (MSRA res4..res6), output_shape() equal to what forward returns at an odd input
    size, padding to the coarsest stride; built and run on the meta device (every variant, no compute)."""
    with torch.device("meta"):
        bb = build("", effvit_cfg(family, arch), family)
        x = torch.empty(1, 3, 97, 131)
        out = bb(x)
    # every map of stride >= 4: res2..res5 (the upsampling-neck family: res4..res6)
    names = [f"res{s.bit_length() - 1}" for s in family_spec.get_family(family).feature_strides if s >= 4]
    shapes = bb.output_shape()
    assert bb.out_features == list(shapes) == list(out) == names
    for n, s in shapes.items():
        assert s.stride == 2 ** int(n[3:])
        assert tuple(out[n].shape) == (1, s.channels, -(-97 // s.stride), -(-131 // s.stride)), n
    assert bb.size_divisibility == max(s.stride for s in shapes.values())
    assert bb.padding_constraints == {"size_divisibility": bb.size_divisibility}


@pytest.mark.parametrize("family", KEYS)
def test_fpn_builders(family):
    """_fpn: P2-P6 (strides 4-64), _retinanet_fpn: P3-P7 (8-128); the upsampling-neck family (MSRA) through its
    upsampling FPN from res4-res6. Every level has MODEL.FPN.OUT_CHANNELS channels and the shape output_shape()
    gives."""
    arch = smallest(family)
    upsample = family_spec.get_family(family).upsample_neck
    for kind, in_features, levels in (("_fpn", ["res2", "res3", "res4", "res5"], range(2, 7)),
                                      ("_retinanet_fpn", ["res3", "res4", "res5"], range(3, 8))):
        cfg = effvit_cfg(family, arch)
        cfg.MODEL.FPN.IN_FEATURES = ["res4", "res5", "res6"] if upsample else in_features
        cfg.MODEL.FPN.OUT_CHANNELS = 32
        with torch.device("meta"):
            fpn = build(kind, cfg, family)
            out = fpn(torch.empty(1, 3, 128, 256))
        shapes = fpn.output_shape()
        assert list(shapes) == list(out) == [f"p{i}" for i in levels], (kind, list(out))
        for n, s in shapes.items():
            assert s.stride == 2 ** int(n[1:]) and s.channels == 32
            assert tuple(out[n].shape) == (1, 32, -(-128 // s.stride), -(-256 // s.stride)), (kind, n)
        # padded to the coarsest backbone stride (Detectron2's FPN keeps it out of padding_constraints)
        assert fpn.size_divisibility == (64 if upsample else 32)
        assert fpn.padding_constraints.get("size_divisibility", fpn.size_divisibility) == fpn.size_divisibility
        if upsample:
            assert type(fpn).__name__ == "UpsampleFPNBackbone"
        else:
            assert type(fpn.top_block).__name__ == ("LastLevelMaxPool" if kind == "_fpn" else "LastLevelP6P7")


@pytest.mark.parametrize("family", KEYS)
def test_every_family_has_three_registered_builders(family):
    import effvit_plugins.detectron2.builders as builders

    for kind in ("", "_fpn", "_retinanet_fpn"):
        name = f"build_{family}{kind}_backbone"
        assert BACKBONE_REGISTRY.get(name) is getattr(builders, name)  # written out in builders.py


@pytest.mark.parametrize("family", KEYS)
def test_class_is_importable_by_name_and_picklable(family):
    import effvit_plugins.detectron2 as d2
    import effvit_plugins.detectron2.backbone as d2_backbone

    spec = family_spec.get_family(family)
    cls = backbone_class(family)
    assert cls.__name__ == cls.__qualname__ == spec.d2_name and cls.__module__ == d2_backbone.__name__
    assert getattr(d2, spec.d2_name) is getattr(d2_backbone, spec.d2_name) is cls and spec.d2_name in d2.__all__
    assert issubclass(cls, spec.backbone) and family_spec.family_of(cls) is spec
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert not hasattr(cls, "feature_strides")  # strides come from the core's feature_info


def test_documented_class_names_import():
    from effvit_plugins.detectron2 import D2EdgeViT, D2EfficientViTMIT  # noqa: F401 (documented names)

    assert D2EdgeViT.__name__ == "D2EdgeViT" and D2EfficientViTMIT is backbone_class("efficientvit_mit")


@pytest.mark.parametrize("family", KEYS)
def test_frozen_stages_and_norm_eval(family):
    bb = build("", effvit_cfg(family, smallest(family), FROZEN_STAGES=1, NORM_EVAL=True), family)
    frozen = {id(p) for m in bb.stem_modules() + bb.stage_modules()[:1] for p in m.parameters()}
    assert frozen
    for name, p in bb.named_parameters():
        assert p.requires_grad == (id(p) not in frozen), name
    bb.train()
    bns = [m for m in bb.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns
    assert all(not m.training for m in bns)
    bb2 = build("", effvit_cfg(family, smallest(family)), family).train()
    assert all(p.requires_grad for p in bb2.parameters())
    assert all(m.training for m in bb2.modules())


@pytest.mark.parametrize("family", KEYS)
def test_with_cp_key_turns_on_gradient_checkpointing(family):
    """MODEL.EFFVIT.WITH_CP True reaches the backbone's with_cp (default False; the FPN builders build the backbone
    the same way): the last block runs again in the backward pass of a training step."""
    from effvit_plugins.testing import count_recomputation

    assert add_effvit_config(get_cfg()).MODEL.EFFVIT.WITH_CP is False
    x = torch.randn(1, 3, 64, 64)
    for with_cp, expected in ((True, 2), (False, 1)):
        bb = build("", effvit_cfg(family, smallest(family), WITH_CP=with_cp, NORM_EVAL=True), family).train()
        assert bb.with_cp == bb.grad_checkpointing == with_cp
        with count_recomputation(bb) as calls:
            sum(o.sum() for o in bb(x).values()).backward()
        assert len(calls) == expected


def test_config_errors_are_clear():
    cfg = effvit_cfg("efficientvit_mit", "b0", OUT_FEATURES=["res2", "res7"])
    with pytest.raises(ValueError, match=r"res7.*Valid names: res1 \(stride 2\)"):
        build("", cfg, "efficientvit_mit")
    with pytest.raises(ValueError, match="MODEL.EFFVIT.FAMILY is 'edgevit'.*build_edgevit_backbone"):
        build("", effvit_cfg("edgevit", "xxs"), "efficientvit_mit")
    with pytest.raises(ValueError, match="MODEL.EFFVIT.ARCH is not set.*b0"):
        build("", effvit_cfg("efficientvit_mit", ""), "efficientvit_mit")
    with pytest.raises(ValueError, match="DROP_PATH_RATE.*not an option"):
        build("", effvit_cfg("efficientvit_mit", "b0", DROP_PATH_RATE=0.1), "efficientvit_mit")
    cfg = effvit_cfg("edgevit", "xxs")
    cfg.MODEL.FPN.IN_FEATURES = ["res1", "res2"]
    with pytest.raises(ValueError, match=r"MODEL.FPN.IN_FEATURES \['res1', 'res2'\] must be maps"):
        build("_fpn", cfg, "edgevit")


def test_add_effvit_config_keys_and_drop_path():
    cfg = add_effvit_config(get_cfg())
    assert set(cfg.MODEL.EFFVIT) >= {"FAMILY", "ARCH", "OUT_FEATURES", "FROZEN_STAGES", "NORM_EVAL",
                                     "DROP_PATH_RATE", "WITH_CP"}
    assert cfg.SOLVER.OPTIMIZER == "SGD" and {"BETAS", "WEIGHT_DECAY_ATTN_BIAS"} <= set(cfg.SOLVER)
    bb = build("", effvit_cfg("efficientformer_v2", "s0", DROP_PATH_RATE=0.2), "efficientformer_v2")
    rates = [m.drop_prob for m in bb.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)


def test_solver_compile_compiles_the_backbone_in_place():
    """SOLVER.COMPILE.ENABLED (off by default) compiles ``model.backbone`` in place (nn.Module.compile: the same
    parameter names), also inside DistributedDataParallel's ``module``; a model without a backbone is an error."""
    from effvit_plugins.detectron2.config import ConfigNotHonouredError
    from effvit_plugins.detectron2.engine import compile_backbone

    cfg = effvit_cfg("efficientvit_mit", "b0")
    assert cfg.SOLVER.COMPILE.ENABLED is False and cfg.SOLVER.COMPILE.BACKEND == "inductor"
    model = torch.nn.Module()
    model.backbone = build("", cfg, "efficientvit_mit")
    names = [n for n, _ in model.named_parameters()]
    assert compile_backbone(cfg, model) is model and model.backbone._compiled_call_impl is None
    cfg.SOLVER.COMPILE.ENABLED = True
    cfg.SOLVER.COMPILE.BACKEND = "eager"
    wrapper = torch.nn.Module()
    wrapper.module = model  # (as DistributedDataParallel holds it)
    assert compile_backbone(cfg, wrapper) is wrapper and model.backbone._compiled_call_impl is not None
    assert [n for n, _ in model.named_parameters()] == names
    with pytest.raises(ConfigNotHonouredError, match="SOLVER.COMPILE.ENABLED is True but the model"):
        compile_backbone(cfg, torch.nn.Linear(2, 2))


def test_adamw_without_decay_on_norms_and_attention_biases():
    cfg = effvit_cfg("efficientformer_v2", "s0")
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.WEIGHT_DECAY_ATTN_BIAS = 0.0
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    bb = build("_fpn", cfg, "efficientformer_v2")
    opt = build_optimizer(cfg, bb)
    assert isinstance(opt, torch.optim.AdamW)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = dict(bb.named_parameters())
    norm_params = {id(p) for m in bb.modules() if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm,
                                                                 torch.nn.GroupNorm, torch.nn.LayerNorm))
                   for p in m.parameters(recurse=False)}
    biases = [n for n in names if n.endswith("attention_biases")]
    assert biases and norm_params
    for n, p in names.items():
        expected = 0.0 if (id(p) in norm_params or n.endswith("attention_biases")) else 0.05
        assert decay[id(p)] == expected, n
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER must be one of SGD, ADAMW"):
        build_optimizer(cfg, bb)


@pytest.mark.parametrize("family", KEYS)
def test_features_equal_the_mmdet_backbone(family, randomized):
    """Same weights -> the same maps as effvit_plugins.mm's mmdet backbone (the upsampling-neck family, MSRA: also
    the upsampling FPN against the mmdet neck EfficientViTMSRAFPN)."""
    spec = family_spec.get_family(family)
    arch = smallest(family)
    cfg = effvit_cfg(family, arch)
    cfg.MODEL.FPN.IN_FEATURES = ["res4", "res5", "res6"]
    cfg.MODEL.FPN.OUT_CHANNELS = 64
    ours = build("_fpn", cfg, family) if spec.upsample_neck else build("", cfg, family)
    ours = randomized(ours).eval()
    bottom_up = ours.bottom_up if spec.upsample_neck else ours
    out_indices = [i for i, f in enumerate(bottom_up.feature_info) if f["reduction"] >= 4]
    theirs = MODELS.get(spec.name)(arch, out_indices=out_indices).eval()
    res = theirs.load_state_dict(bottom_up.state_dict(), strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        expected = theirs(x)
        got = bottom_up(x)
        assert len(got) == len(expected)
        for (name, a), b in zip(got.items(), expected):
            assert b.abs().max() > 1e-3
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
        if spec.upsample_neck:
            neck = EfficientViTMSRAFPN(bottom_up.out_channels, 64, num_outs=5, num_extra_trans_convs=2).eval()
            neck.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("bottom_up.")},
                                 strict=True)
            for a, b in zip(ours(x).values(), neck(expected)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_imports_and_builds_without_openmmlab():
    """effvit_plugins.detectron2 (and LVIS evaluation's numpy fix) work with mmcv / mmdet / mmengine / mmseg /
    mmpretrain unimportable."""
    code = textwrap.dedent("""
        import importlib.abc, sys
        BLOCKED = ("mmcv", "mmdet", "mmengine", "mmseg", "mmpretrain")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {name}")
        sys.meta_path.insert(0, Block())
        import torch
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model
        import effvit_plugins.detectron2 as d2
        from effvit_plugins.detectron2.engine import install_lvis_compat
        cfg = d2.add_effvit_config(get_cfg())
        cfg.merge_from_file("configs/detectron2/COCO-InstanceSegmentation/mask_rcnn_efficientvit_msra_m0_upfpn_1x.yaml")
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg).eval()
        with torch.no_grad():
            model([{"image": torch.zeros(3, 64, 64)}])
        install_lvis_compat()
        import lvis.eval
        assert lvis.eval.np.float is float, "lvis numpy fix not installed"
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print("OK")
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-3000:]


def test_builder_name_taken_is_a_clear_error():
    """A builder whose name is registered already (here: the built-in EdgeViT one) is refused with both names; the
    same function imported again (pytest's importlib mode imports a module twice) is no error."""
    import types

    from effvit_plugins.detectron2 import builders, register_backbone

    def build_edgevit_backbone(cfg, input_shape):
        raise AssertionError("never called")

    with pytest.raises(ValueError, match=r"'build_edgevit_backbone' is already registered in BACKBONE_REGISTRY by "
                                         r"effvit_plugins\.detectron2\.builders\.build_edgevit_backbone\. Rename"):
        register_backbone(build_edgevit_backbone)
    original = builders.build_edgevit_backbone
    again = types.FunctionType(original.__code__, original.__globals__, original.__name__)
    again.__qualname__, again.__module__ = original.__qualname__, original.__module__
    assert register_backbone(again) is again and BACKBONE_REGISTRY.get("build_edgevit_backbone") is original
