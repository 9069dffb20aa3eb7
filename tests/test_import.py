"""What ``import effvit_plugins`` changes: the cores import without any framework; with mmengine, registration and
two repairs, announced by one log line and turned off by EFFVIT_PLUGINS_NO_PATCHES=1 (registration stays)."""
import os
import subprocess
import sys
import textwrap

from effvit_plugins.models.spec import BUILTIN_FAMILY_MODULES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("mmengine", "mmcv", "mmdet", "mmseg", "mmpretrain", "detectron2")


def run_py(code, **env):
    """``code`` in a fresh interpreter with the repository first on the path; returns (stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if k != "EFFVIT_PLUGINS_NO_PATCHES"}
    full_env.update(PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout, r.stderr


def test_models_import_without_any_framework():
    """effvit_plugins.models, the spec and every family module (and the framework-free helpers) with mmengine,
    mmcv, mmdet, mmseg, mmpretrain and Detectron2 unimportable; importing changes nothing then."""
    out, err = run_py(f"""
        import sys
        for name in {FRAMEWORKS!r}:
            sys.modules[name] = None  # `import name` raises ImportError
        meta_path = list(sys.meta_path)
        import effvit_plugins.models
        from effvit_plugins.models import spec
        for module in {BUILTIN_FAMILY_MODULES!r}:
            __import__(module)
        import effvit_plugins.convert, effvit_plugins.compat.lvis, effvit_plugins.datasets.layouts
        assert [s.key for s in spec.families()]
        assert "effvit_plugins.mm" not in sys.modules
        assert sys.meta_path == meta_path  # no import hook installed
        print("OK")
    """)
    assert out.strip() == "OK" and "EFFVIT_PLUGINS_NO_PATCHES" not in err


PROBE = """
    import sys
    import effvit_plugins
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader
    from effvit_plugins.compat.lvis import _LvisEvalFinder
    from effvit_plugins.mm.compat import load_from_effvit_plugins
    from effvit_plugins.models.spec import families
    from mmdet.registry import MODELS
    print("loader patched:", all(CheckpointLoader._schemes[p] is load_from_effvit_plugins
                                 for p in ("", "https://", "open-mmlab://", "torchvision://")))
    print("history buffer patched:", HistoryBuffer.__getstate__.__module__ == "effvit_plugins.mm.compat")
    from mmengine.optim import OptimWrapper
    print("param groups patched:", OptimWrapper.__init__.__module__ == "effvit_plugins.mm.compat")
    print("lvis hook:", any(isinstance(f, _LvisEvalFinder) for f in sys.meta_path))
    print("registered:", all(MODELS.get(s.name) is not None for s in families()))
"""


def test_import_logs_one_line_naming_the_patches():
    out, err = run_py(PROBE + """
    from effvit_plugins.compat import lvis
    lvis.install()  # already applied: nothing changes, nothing is logged
    """)
    assert "loader patched: True" in out and "history buffer patched: True" in out and "lvis hook: True" in out
    assert "param groups patched: True" in out and "registered: True" in out
    lines = [line for line in (out + err).splitlines() if "EFFVIT_PLUGINS_NO_PATCHES" in line]
    assert len(lines) == 1, out + err
    assert "mmengine's checkpoint loader" in lines[0] and "lvis.eval" in lines[0] and "INFO" in lines[0]
    assert "parameter groups as plain dicts" in lines[0]


def test_env_var_turns_the_patches_off_but_not_registration():
    out, err = run_py(PROBE + """
    from effvit_plugins.compat import lvis
    assert lvis.install() is False
    """, EFFVIT_PLUGINS_NO_PATCHES="1")
    assert "loader patched: False" in out and "history buffer patched: False" in out and "lvis hook: False" in out
    assert "param groups patched: False" in out and "registered: True" in out
    assert "EFFVIT_PLUGINS_NO_PATCHES" not in out + err and "patched " not in out + err


def test_first_repair_outside_import_logs_its_line():
    """Without mmengine (Detectron2's use), the LVIS repair applied by the trainer announces itself once."""
    out, err = run_py(f"""
        import logging, sys
        for name in {FRAMEWORKS!r}:
            sys.modules[name] = None
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
        from effvit_plugins.compat import lvis
        assert lvis.install() is True and lvis.install() is False
    """)
    lines = [line for line in out.splitlines() if "EFFVIT_PLUGINS_NO_PATCHES" in line]
    assert len(lines) == 1 and lines[0].startswith("effvit_plugins.compat: ") and "lvis.eval" in lines[0], out
