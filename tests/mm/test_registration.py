"""Our names resolve in mmseg / mmdet / mmpretrain (own default scopes) and clash with nothing upstream."""
import subprocess
import sys
import textwrap

DENSE = ("mmseg", "mmdet", "mmpretrain")
OUR_NAMES = {"EfficientViTMIT": DENSE, "EfficientViTMSRA": DENSE, "EdgeViT": DENSE, "EfficientFormerV1": DENSE,
             "EfficientViTMSRAFPN": ("mmdet", "mmseg"),
             "EfficientFormerV2": DENSE, "EfficientViTMITSegHead": ("mmseg",),
             "EfficientViTMITClsHead": ("mmpretrain",), "EfficientViTMSRAClsHead": ("mmpretrain",),
             "EdgeViTClsHead": ("mmpretrain",), "EfficientFormerV1ClsHead": ("mmpretrain",),
             "EfficientFormerV2ClsHead": ("mmpretrain",)}


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
