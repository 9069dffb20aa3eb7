"""Our names resolve in mmseg / mmdet / mmpretrain (own default scopes) and clash with nothing upstream; a family
registered at run time gets its OpenMMLab classes too."""
import subprocess
import sys
import textwrap

from effvit_plugins.models.spec import families

DENSE = ("mmseg", "mmdet", "mmpretrain")
# every family's backbone and ImageNet head (the rule of effvit_plugins/mm/register.py), and the hand-written modules
OUR_NAMES = {**{s.name: DENSE for s in families()},
             **{s.head_name: ("mmpretrain",) for s in families() if s.cls_head is not None},
             "EfficientViTMSRAFPN": ("mmdet", "mmseg"), "EfficientViTMITSegHead": ("mmseg",)}


def run_py(code, cwd):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_names_do_not_clash_and_resolve_in_each_scope(repo_root):
    out = run_py(f"""
        import importlib
        ours = {OUR_NAMES!r}
        regs = {{}}
        for lib in ('mmseg', 'mmdet', 'mmpretrain'):
            importlib.import_module(lib + '.models')          # populate every upstream name first
            regs[lib] = importlib.import_module(lib + '.registry').MODELS
        for name in ours:
            for lib, reg in regs.items():
                assert reg.get(name) is None, (name, lib, 'clashes with an upstream name')
        assert regs['mmpretrain'].get('EfficientFormer') is not None  # upstream name we must not shadow
        upstream_ef = regs['mmpretrain'].get('EfficientFormer')
        import effvit_plugins
        assert regs['mmpretrain'].get('EfficientFormer') is upstream_ef
        from mmengine.registry import DefaultScope
        for name, libs in ours.items():
            for lib in libs:
                with DefaultScope.overwrite_default_scope(lib):
                    assert regs[lib].get(name) is not None, (name, lib)
        # scoped name from any scope
        from mmengine.registry import init_default_scope
        init_default_scope('mmdet')
        m = regs['mmdet'].build(dict(type='effvit_plugins.EfficientViTMIT', arch='b0', out_indices=(1, 2, 3, 4)))
        assert m.out_strides == [4, 8, 16, 32]
        print('OK')
    """, repo_root)
    assert "OK" in out


def test_custom_imports_in_config(tmp_path, repo_root):
    cfg = tmp_path / "user_cfg.py"
    cfg.write_text(textwrap.dedent("""
        custom_imports = dict(imports=['effvit_plugins'], allow_failed_imports=False)
        default_scope = 'mmseg'
        model = dict(type='EncoderDecoder',
                     backbone=dict(type='EfficientViTMIT', arch='b0', out_indices=(2, 3, 4)),
                     decode_head=dict(type='EfficientViTMITSegHead', in_channels=[128, 64, 32], in_index=[2, 1, 0],
                                      head_width=32, head_depth=1, expand_ratio=4, middle_op='mbconv',
                                      final_expand=4, num_classes=19))
    """))
    out = run_py(f"""
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        cfg = Config.fromfile({str(cfg)!r})
        init_default_scope(cfg.default_scope)
        from mmseg.registry import MODELS
        m = MODELS.build(cfg.model)
        print(type(m.backbone).__name__, type(m.decode_head).__name__)
    """, tmp_path)
    assert "EfficientViTMIT EfficientViTMITSegHead" in out


def test_a_name_taken_by_someone_else_is_an_error(repo_root):
    out = run_py("""
        import effvit_plugins
        from effvit_plugins.mm.register import register_model
        from mmdet.registry import MODELS
        from effvit_plugins.mm.backbones import EfficientViTMIT
        # another package's class under one of our names
        Impostor = type("EfficientViTMIT", (object,), {"__module__": "someone_else.models"})
        try:
            register_model("mmdet")(Impostor)
        except KeyError as e:
            assert "already taken by effvit_plugins.mm.backbones.EfficientViTMIT" in str(e), e
            assert "type='effvit_plugins.EfficientViTMIT'" in str(e), e
        else:
            raise SystemExit("no error")
        assert MODELS.get("EfficientViTMIT") is EfficientViTMIT  # ours untouched
        # and the other way round: their class first, ours refused with a clear error
        Theirs = type("EfficientViTMSRAFPN", (object,), {"__module__": "someone_else.necks"})
        from mmengine.registry import Registry
        reg = Registry("model", scope="probe")
        reg.register_module(module=Theirs)
        from effvit_plugins.mm import register as r
        regs = r._downstream_registries
        r._downstream_registries = lambda libs: [reg]
        try:
            from effvit_plugins.mm.necks import EfficientViTMSRAFPN
            register_model("probe")(EfficientViTMSRAFPN)
        except KeyError as e:
            assert "already taken by someone_else.necks.EfficientViTMSRAFPN" in str(e), e
        else:
            raise SystemExit("no error for a name registered first by someone else")
        finally:
            r._downstream_registries = regs
        print("OK")
    """, repo_root)
    assert "OK" in out


def test_classes_pickle_and_build_by_scoped_name(repo_root):
    out = run_py("""
        import pickle
        import effvit_plugins
        from mmengine.registry import init_default_scope
        from mmseg.registry import MODELS
        init_default_scope('mmseg')
        for cfg in (dict(type='EfficientViTMITSegHead', in_channels=[128, 64, 32], in_index=[2, 1, 0],
                         head_width=32, head_depth=1, expand_ratio=4, middle_op='mbconv', final_expand=4,
                         num_classes=19),
                    dict(type='effvit_plugins.EfficientViTMSRAFPN', in_channels=[64, 128, 192], out_channels=32,
                         num_outs=5, num_extra_trans_convs=2)):
            m = MODELS.build(cfg)
            clone = pickle.loads(pickle.dumps(m))
            assert type(clone) is type(m) and type(m).__module__.startswith('effvit_plugins.mm.')
        print("OK")
    """, repo_root)
    assert "OK" in out


# A sixth family declared at run time from one spec (a tiny conv net); NAME is set by the test.
TOY_FAMILY = """
    import torch.nn as nn
    from effvit_plugins.models.base import BackboneBase
    from effvit_plugins.models.spec import FamilySpec, Paper, register_family

    TOY_ARCH = {"t": dict(widths=(8, 16)), "s": dict(widths=(16, 32))}

    class ToyBackbone(BackboneBase):
        "A two-stage conv net (arch 't' or 's')."

        def __init__(self, arch="t", in_channels=3, out_indices=(0, 1), frozen_stages=-1, norm_eval=False):
            super().__init__()
            w = TOY_ARCH[arch]["widths"]
            self.stem = nn.Conv2d(in_channels, w[0], 3, 2, 1)
            self.stage1 = nn.Sequential(nn.Conv2d(w[0], w[0], 3, 2, 1), nn.BatchNorm2d(w[0]), nn.ReLU())
            self.stage2 = nn.Sequential(nn.Conv2d(w[0], w[1], 3, 2, 1), nn.BatchNorm2d(w[1]), nn.ReLU())
            self.init_contract(list(w), [4, 8], ["stage1", "stage2"], in_channels, out_indices, frozen_stages,
                               norm_eval)

        def stem_modules(self):
            return [self.stem]

        def stage_modules(self):
            return [self.stage1, self.stage2]

        def feature_steps(self):
            return [[self.stem, self.stage1], [self.stage2]]

    class ToyClsHead(nn.Module):
        "Global average pool + linear."

        def __init__(self, in_channels, num_classes=1000):
            super().__init__()
            self.fc = nn.Linear(in_channels, num_classes)

        def forward(self, feats):
            return self.fc(feats[-1].mean((2, 3)))

    SPEC = register_family(FamilySpec(
        key="toynet", title="ToyNet", name=NAME, config_folder="toynet", config_prefix="toynet",
        backbone=ToyBackbone, cls_head=ToyClsHead, arch_settings=TOY_ARCH, feature_strides=(4, 8),
        convert=dict, key_signature=("stage1.0.weight", "toy_marker"),
        paper=Paper(authors="Nobody", venue="none", arxiv="0000.00000", title="Toy", code="none/none")))
"""


def _toy_family(indent: int) -> str:
    return textwrap.indent(textwrap.dedent(TOY_FAMILY), " " * indent).strip()


def test_family_registered_at_run_time_gets_its_openmmlab_classes(repo_root, tmp_path):
    ckpt = str(tmp_path / "toy.pth")
    out = run_py(f"""
        import importlib, pickle, torch
        import effvit_plugins
        NAME = "ToyNet"
        {_toy_family(8)}
        from mmengine.registry import DefaultScope
        for lib in ("mmseg", "mmdet", "mmpretrain"):
            reg = importlib.import_module(lib + ".registry").MODELS
            with DefaultScope.overwrite_default_scope(lib):
                bb = reg.build(dict(type="ToyNet", arch="t"))
            assert isinstance(bb, ToyBackbone) and [o.shape[1] for o in bb(torch.zeros(1, 3, 32, 32))] == [8, 16]
        from mmpretrain.registry import MODELS as PRETRAIN
        head = PRETRAIN.build(dict(type="ToyNetClsHead", in_channels=16, num_classes=3))
        assert isinstance(head, ToyClsHead) and hasattr(head, "loss_module")
        from effvit_plugins.registry import MODELS as OWN
        assert OWN.get("ToyNet") is type(bb) and OWN.get("ToyNetClsHead") is type(head)
        # importable by name, picklable, documented
        from effvit_plugins.mm.backbones import ToyNet
        from effvit_plugins.mm.cls_heads import ToyNetClsHead
        assert type(bb) is ToyNet and type(head) is ToyNetClsHead
        assert (ToyNet.__module__, ToyNet.__qualname__) == ("effvit_plugins.mm.backbones", "ToyNet")
        assert "A two-stage conv net" in ToyNet.__doc__ and "init_cfg" in ToyNet.__doc__
        assert type(pickle.loads(pickle.dumps(bb))) is ToyNet
        # init_cfg=Pretrained: the family is found from the core class, the file loads strictly
        torch.save({{"state_dict": {{"backbone." + k: v for k, v in bb.state_dict().items()}}}}, {ckpt!r})
        fresh = OWN.build(dict(type="ToyNet", arch="t", init_cfg=dict(type="Pretrained", checkpoint={ckpt!r})))
        fresh.init_weights()
        assert all(torch.equal(v, bb.state_dict()[k]) for k, v in fresh.state_dict().items())
        print("OK")
    """, repo_root)
    assert "OK" in out


def test_family_named_like_another_packages_model_is_an_error(repo_root):
    """A family named like one of mmdet's models ('ResNet'): an error naming the other class, theirs untouched."""
    out = run_py(f"""
        import re
        import effvit_plugins
        import mmdet.models  # noqa: F401  (mmdet's own names)
        NAME = "ResNet"
        try:
            {_toy_family(12)}
        except KeyError as e:
            assert re.search(r"cannot register 'ResNet' .*already taken by mm(det|seg)\\.models\\.", str(e)), e
        else:
            raise SystemExit("no error")
        from mmdet.registry import MODELS
        assert MODELS.get("ResNet").__module__.startswith("mmdet.")  # theirs untouched
        print("OK")
    """, repo_root)
    assert "OK" in out
