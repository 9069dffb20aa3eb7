"""tools/get_flops.py on detection configs: backbone + neck params / MACs at 800x1333 (padded to 800x1344), counted
on the meta device without any dataset. Every detection config found under configs/ is checked against an
independent count: the backbone alone (FlopCounter on the meta device) plus the FPN written out analytically; the
generated ones also against the figures of their folder's README (configs/<folder>/README.md)."""
import glob
import importlib.util
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

import effvit_plugins  # noqa: F401
from effvit_plugins.models.spec import families
from effvit_plugins.utils.complexity import count_macs, count_params

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, "scripts"))
import configgen  # noqa: E402
from configgen import docs  # noqa: E402

GENERATED = {g.path: g for g in configgen.generated() if g.framework == "mmdet"}
DET_CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, "configs", "**", "*.py"), recursive=True)
                     if f"{os.sep}_base_{os.sep}" not in p and f"{os.sep}demo{os.sep}" not in p
                     and not p.startswith(osp.join(ROOT, "configs", "detectron2", ""))
                     and Config.fromfile(p).get("default_scope") == "mmdet")


def _tool():
    spec = importlib.util.spec_from_file_location("_get_flops", osp.join(ROOT, "tools", "get_flops.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def conv(cin, cout, k, h, w):
    """(params, MACs) of a biased k x k convolution producing an h x w map."""
    return cin * cout * k * k + cout, cin * cout * k * k * h * w


def fpn_expected(neck, feats):
    """(params, MACs) of mmdet's FPN / our EfficientViTMSRAFPN (no norms) on backbone maps of shapes ``feats``."""
    oc, start = neck["out_channels"], neck.get("start_level", 0)
    used = feats[start:]
    parts = [conv(c, oc, 1, h, w) for c, h, w in used] + [conv(oc, oc, 3, h, w) for _, h, w in used]
    n_trans = neck.get("num_extra_trans_convs", 0)
    _, h, w = used[0]
    for _ in range(n_trans):  # 2x2 stride-2 transposed conv: MACs counted per input pixel, then a 3x3 conv
        parts += [(oc * oc * 4 + oc, oc * oc * 4 * h * w)]
        h, w = 2 * h, 2 * w
        parts += [conv(oc, oc, 3, h, w)]
    extra = neck["num_outs"] - len(used) - n_trans
    src_c, h, w = used[-1]
    if neck.get("add_extra_convs") not in (None, False):
        assert neck["add_extra_convs"] == "on_input"
        for i in range(extra):
            h, w = (h + 1) // 2, (w + 1) // 2
            parts += [conv(src_c if i == 0 else oc, oc, 3, h, w)]
    return sum(p for p, _ in parts), sum(m for _, m in parts)


_BACKBONE_CACHE = {}


def backbone_count(bb_cfg):
    """(params, MACs, output shapes) of the backbone alone at 800x1344 on the meta device. The MACs are shared by
    the RetinaNet / Mask R-CNN / LVIS configs of a variant (the stages computed do not depend on which ones are
    returned; output norms are not multiply-accumulates), so they are counted once per variant."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmdet"), torch.device("meta"):
        params = count_params(MODELS.build(bb_cfg))
        key = repr(sorted((k, v) for k, v in bb_cfg.items() if k != "out_indices"))
        if key not in _BACKBONE_CACHE:
            full = MODELS.build(dict(bb_cfg, out_indices=tuple(range(max(bb_cfg["out_indices"]) + 1))))
            feats = full(torch.empty(1, 3, 800, 1344))
            _BACKBONE_CACHE[key] = (count_macs(full, (1, 3, 800, 1344)),
                                    [(int(f.shape[1]), int(f.shape[2]), int(f.shape[3])) for f in feats])
    macs, shapes = _BACKBONE_CACHE[key]
    return params, macs, [shapes[i] for i in bb_cfg["out_indices"]]


def test_configs_found():
    # RetinaNet + Mask R-CNN for every variant, LVIS for one per family (+ hand-written ones)
    assert len(DET_CONFIGS) >= sum(2 * len(s.variants) + 1 for s in families())
    assert {osp.join(ROOT, p) for p in GENERATED} <= set(DET_CONFIGS)


@pytest.fixture(scope="module")
def readme_rows():
    """The rows of the folder READMEs: config path -> its row."""
    rows = {}
    for folder in {g.spec.config_folder for g in GENERATED.values()}:
        with open(osp.join(ROOT, docs.readme_path(folder))) as f:
            for line in f:
                m = re.match(r"\| \[`[^`]+`\]\(([^)]+\.py)\)", line)
                if m:
                    rows[osp.normpath(osp.join("configs", folder, m.group(1)))] = line.strip()
    return rows


@pytest.mark.parametrize("path", DET_CONFIGS, ids=[osp.basename(p) for p in DET_CONFIGS])
def test_backbone_and_neck_complexity(path, readme_rows):
    """tools/get_flops.py's count = the backbone alone + the FPN written out; the README shows the same figures."""
    cfg = Config.fromfile(path)
    got = _tool().detector_complexity(cfg, (800, 1333))
    assert got["padded"] == (800, 1344)
    p_bb, m_bb, shapes = backbone_count(cfg.model.backbone.to_dict())
    p_neck, m_neck = fpn_expected(cfg.model.neck, shapes)
    assert got["params"] == p_bb + p_neck
    assert got["macs"] == m_bb + m_neck
    assert got["total_params"] > got["params"]
    rel = osp.relpath(path, ROOT)
    if rel in GENERATED:
        assert readme_rows[rel].endswith(f" {docs.ours((got['params'], got['macs']))} |"), \
            f"configs/{GENERATED[rel].spec.config_folder}/README.md: run python scripts/gen_configs.py"


def test_cli_without_dataset(tmp_path):
    # a RetinaNet config, on the upsampling FPN if a family has it
    retinanets = [g for g in GENERATED.values() if g.task == "retinanet"]
    config = osp.join(ROOT, next((g for g in retinanets if g.spec.upsample_neck), retinanets[0]).path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, osp.join(ROOT, "tools", "get_flops.py"), config], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=300)  # cwd has no data/: nothing is read
    assert r.returncode == 0, r.stderr[-3000:]
    expected = _tool().detector_complexity(Config.fromfile(config), (800, 1333))
    assert "Input shape: (1, 3, 800, 1344)" in r.stdout
    assert f"Params (backbone + neck): {expected['params'] / 1e6:.3f} M ({expected['params']})" in r.stdout
    assert f"MACs (backbone + neck): {expected['macs'] / 1e9:.3f} G ({expected['macs']})" in r.stdout
