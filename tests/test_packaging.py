"""The package as a user installs it: the wheel built from this checkout, installed with ``--no-deps`` into a
separate target directory (not the editable tree), used from a working directory outside the repository with only
that directory on ``PYTHONPATH``:

* mmseg's OWN tools/train.py and tools/test.py (from the installed mmseg's ``.mim/tools``) train and evaluate one of
  our configs taken from inside the wheel (``effvit_plugins/.mim/configs/demo``) on a tiny generated ADE20K set;
* our tools run from the wheel's ``.mim/tools`` (no import of the repository's ``tools`` folder): the demo data
  generator writes that set, tools/train.py names the packaged demo config when data is missing;
* ``mim search effvit_plugins`` lists every model of the packaged model-index.yml;
* ``import effvit_plugins.models`` needs torch only: with mmengine, mmcv, mmdet, mmseg, mmpretrain and Detectron2
  unimportable, the smallest variant of every family builds and runs;
* the wheel and the sdist carry exactly the linked folders under ``effvit_plugins/.mim`` and no tests.

One module-scoped fixture builds the wheel and the sdist from a copy of the checkout (so the build's ``build/`` and
``*.egg-info`` stay out of the repository) and installs the wheel.
"""
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import pytest
import yaml
from modelindex.load_model_index import load

from effvit_plugins.testing import mim_search_names

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MIM_DIR = osp.join(ROOT, "effvit_plugins", ".mim")
# what the wheel ships under effvit_plugins/.mim, each a link to the repository's top-level entry of that name
SHIPPED = ("configs", "tools", "demo", "model-index.yml")
FRAMEWORKS = ("mmengine", "mmcv", "mmdet", "mmseg", "mmpretrain", "detectron2")
MIM = osp.join(osp.dirname(sys.executable), "mim")  # openmim's console script (scripts/setup.sh installs it)
DEMO_CONFIG = "fpn_edgevit-xxs_1xb4-200iter_ade20k-demo-64x64.py"  # the smallest demo config (64x64 crops)
# top-level entries of the checkout that are build or run outputs, not sources
NOT_SOURCES = {".git", ".venv", "build", "dist", "data", "work_dirs", "demo_out", ".pytest_cache"}


def run(args, cwd, site=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    r = subprocess.run([str(a) for a in args], cwd=str(cwd), env=env, capture_output=True, text=True,
                       timeout=timeout)
    r.output = r.stdout + r.stderr
    return r


def check(r):
    assert r.returncode == 0, r.output[-5000:]
    return r


def _ignore_outputs(directory, names):
    ignored = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if osp.realpath(directory) == osp.realpath(ROOT):
        ignored |= NOT_SOURCES & set(names)
    return ignored


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(site, wheel, sdist, outside)``: the wheel installed with --no-deps into ``site``, both archives, and an
    empty working directory outside the repository."""
    tmp = tmp_path_factory.mktemp("packaging")
    src, dist, site = tmp / "src", tmp / "dist", tmp / "site"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_ignore_outputs)
    check(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
               "-q", "-w", dist, "."], cwd=src))
    check(run([sys.executable, "setup.py", "-q", "sdist", "-d", dist], cwd=src))
    (wheel,) = glob.glob(str(dist / "*.whl"))
    (sdist,) = glob.glob(str(dist / "*.tar.gz"))
    check(run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q", "--target",
               site, wheel], cwd=tmp))
    outside = tmp / "outside"
    outside.mkdir()
    r = check(run([sys.executable, "-c", "import effvit_plugins; print(effvit_plugins.__file__)"], outside, site))
    assert r.stdout.strip() == str(site / "effvit_plugins" / "__init__.py"), r.stdout  # not the editable tree
    return site, wheel, sdist, outside


@pytest.fixture(scope="module")
def ade_demo(installed):
    """A tiny ADE20K-layout set written by the wheel's own tools/generate_demo_data.py: its data_root."""
    site, _, _, outside = installed
    out = outside / "ade_demo"
    r = check(run([sys.executable, site / "effvit_plugins" / ".mim" / "tools" / "generate_demo_data.py", "--dataset",
                   "ade20k", "--out", out, "--num-train", "2", "--num-val", "1", "--height", "64", "--width", "80"],
                  outside, site))
    data_root = out / "ADEChallengeData2016"
    assert f"data_root='{data_root}/'" in r.stdout, r.output
    return data_root


def shipped_files():
    """Every file the links of effvit_plugins/.mim lead to, as ``.mim/...`` paths (no caches)."""
    files = set()
    for name in os.listdir(MIM_DIR):
        target = osp.join(MIM_DIR, name)
        paths = [target] if osp.isfile(target) else glob.glob(osp.join(target, "**", "*"), recursive=True)
        files |= {osp.relpath(p, osp.dirname(MIM_DIR)) for p in paths
                  if osp.isfile(p) and "__pycache__" not in p and not p.endswith(".pyc")}
    return files


def test_mim_folder_links_the_shipped_entries():
    """effvit_plugins/.mim holds one relative link per shipped top-level entry the repository has, and nothing else."""
    expected = sorted(n for n in SHIPPED if osp.exists(osp.join(ROOT, n)))
    assert sorted(os.listdir(MIM_DIR)) == expected
    for name in expected:
        link = osp.join(MIM_DIR, name)
        assert osp.islink(link) and os.readlink(link) == f"../../{name}", (name, os.readlink(link))
        assert osp.realpath(link) == osp.realpath(osp.join(ROOT, name))


def test_wheel_and_sdist_contents(installed):
    _, wheel, sdist, _ = installed
    expected = {f"effvit_plugins/{p}" for p in shipped_files()}
    assert {"effvit_plugins/.mim/tools/train.py", "effvit_plugins/.mim/tools/test.py",
            f"effvit_plugins/.mim/configs/demo/{DEMO_CONFIG}"} <= expected
    if osp.exists(osp.join(ROOT, "model-index.yml")):
        assert "effvit_plugins/.mim/model-index.yml" in expected

    names = zipfile.ZipFile(wheel).namelist()
    assert {n for n in names if "/.mim/" in n} == expected
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n or n.endswith(".pyc")]
    assert {"effvit_plugins/version.py", "effvit_plugins/data/published_results.json"} <= set(names)

    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
    prefix = members[0].name.split("/")[0] + "/"
    in_sdist = {m.name[len(prefix):] for m in members if m.isfile()}
    assert {n for n in in_sdist if "/.mim/" in n} == expected  # real files, copied from the links
    assert not [m.name for m in members if m.issym() or m.islnk()]
    assert not [n for n in in_sdist if n.startswith("tests/")]
    assert {"setup.py", "README.md", "LICENSE", "NOTICE", "CITATION.cff", "CHANGELOG.md"} <= in_sdist


def test_models_need_torch_only(installed):
    """From the wheel, with every framework unimportable: the cores import, the smallest variant of every family
    builds through its spec and runs, and nothing outside the standard library and torch's own requirements is
    imported on top of what `import torch` imports. The version (effvit_plugins/version.py, the one place) is the
    wheel's."""
    site, wheel, _, outside = installed
    code = textwrap.dedent(f"""
        import importlib.metadata as md, re, sys
        for name in {FRAMEWORKS!r}:
            sys.modules[name] = None  # `import name` raises ImportError
        import torch
        before = {{m.split(".")[0] for m in sys.modules}}
        import effvit_plugins, effvit_plugins.convert, effvit_plugins.checkpoint
        from effvit_plugins.models.spec import families
        assert effvit_plugins.__file__.startswith({str(site)!r}), effvit_plugins.__file__
        from effvit_plugins.version import __version__
        assert effvit_plugins.__version__ == __version__
        print("version", __version__)
        for spec in families():
            model = spec.backbone(spec.variants[0]).eval()
            with torch.no_grad():
                outs = model(torch.randn(1, 3, 64, 64))
            assert outs and all(o.shape[0] == 1 and o.isfinite().all() for o in outs), spec.key
            print("built", spec.key, spec.variants[0])
        norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
        allowed, todo = set(), ["torch"]
        while todo:  # torch's requirements, transitively (not its extras)
            dist = norm(todo.pop())
            if dist in allowed:
                continue
            allowed.add(dist)
            try:
                reqs = md.requires(dist) or []
            except md.PackageNotFoundError:
                continue
            todo += [re.split(r"[ ;<>=!~\\[(]", r, maxsplit=1)[0] for r in reqs if "extra ==" not in r]
        owners = md.packages_distributions()
        new = {{m.split(".")[0] for m in sys.modules}} - before - set(sys.stdlib_module_names) - {{"effvit_plugins"}}
        foreign = {{m: owners.get(m) for m in new if not set(map(norm, owners.get(m, [m]))) & allowed}}
        assert not foreign, foreign
        print("OK")
    """)
    r = check(run([sys.executable, "-c", code], outside, site))
    from effvit_plugins.models.spec import families

    assert r.stdout.count("built ") == len(families()) and r.stdout.strip().endswith("OK"), r.output
    version = r.stdout.split("version ", 1)[1].split()[0]
    assert osp.basename(wheel).startswith(f"effvit_plugins-{version}-py3-none-any"), (wheel, version)


def test_mmseg_own_tools_train_and_test_a_packaged_config(installed, ade_demo):
    """mmseg's tools/train.py then tools/test.py with the demo config from inside the wheel, 2 iterations."""
    import mmseg

    site, _, _, outside = installed
    tools = osp.join(osp.dirname(mmseg.__file__), ".mim", "tools")
    config = site / "effvit_plugins" / ".mim" / "configs" / "demo" / DEMO_CONFIG
    work = outside / "mmseg_work"
    data = [f"{loader}.dataset.data_root={ade_demo}" for loader in ("train_dataloader", "val_dataloader",
                                                                    "test_dataloader")]
    r = check(run([sys.executable, osp.join(tools, "train.py"), config, "--work-dir", work, "--cfg-options", *data,
                   "train_cfg.max_iters=2", "train_cfg.val_interval=2", "train_dataloader.batch_size=2",
                   "default_hooks.checkpoint.interval=2", "default_hooks.logger.interval=1"], outside, site, 600))
    assert "Iter(train) [2/2]" in r.output, r.output[-3000:]
    checkpoint = work / "iter_2.pth"
    assert checkpoint.is_file(), os.listdir(work)
    r = check(run([sys.executable, osp.join(tools, "test.py"), config, checkpoint, "--work-dir", outside / "mmseg_test",
                   "--cfg-options", data[2]], outside, site, 600))
    assert "mIoU" in r.output, r.output[-3000:]


def test_our_tools_run_from_the_wheel(installed):
    """tools/train.py from the wheel's .mim/tools: its "dataset missing" message names the packaged demo config."""
    site, _, _, outside = installed
    mim_dir = site / "effvit_plugins" / ".mim"
    r = run([sys.executable, mim_dir / "tools" / "train.py", mim_dir / "configs" / "demo" / DEMO_CONFIG], outside, site)
    assert r.returncode == 2 and "Traceback" not in r.output, r.output[-3000:]
    assert "missing data_root 'data/ade_demo/ADEChallengeData2016'" in r.stderr, r.stderr
    assert f"python tools/train.py {mim_dir / 'configs' / 'demo' / DEMO_CONFIG}" in r.stderr, r.stderr
    assert not (outside / "work_dirs").exists()


def test_mim_search_lists_every_model(installed):
    site, _, _, outside = installed
    index = site / "effvit_plugins" / ".mim" / "model-index.yml"
    assert index.is_file(), "the wheel has no effvit_plugins/.mim/model-index.yml"
    names = [m.name for m in load(str(index)).models]  # model-index's loader, which mim itself uses
    assert names and len(set(names)) == len(names)
    r = check(run([MIM, "search", "effvit_plugins"], outside, site))
    assert sorted(mim_search_names(r.stdout)) == sorted(names), r.output[-3000:]


def test_citation_and_notice_name_every_family():
    """CITATION.cff references each family's paper (title and arXiv id); NOTICE names each official repository."""
    from effvit_plugins.models.spec import families

    with open(osp.join(ROOT, "CITATION.cff")) as f:
        cff = yaml.safe_load(f)
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0"
    references = {(r["title"], i["value"]) for r in cff["references"] for i in r["identifiers"]}
    with open(osp.join(ROOT, "NOTICE")) as f:
        notice = f.read()
    for spec in families():
        assert (spec.paper.title, f"arXiv:{spec.paper.arxiv}") in references, spec.key
        assert f"https://github.com/{spec.paper.code}" in notice, spec.key
