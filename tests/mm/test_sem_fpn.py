"""Semantic FPN configs (ADE20K 512x512 and Cityscapes) of every family without its own segmentation head, generated
from the specs (scripts/configgen/mmseg.py; their staleness: tests/scripts/test_gen_configs.py): params/MACs = the
core backbone + mmseg's FPN/FPNHead (no published params/MACs exist to compare with), the published mIoU (where
there is one) in the header, inference at odd sizes through mmseg's API, tiny trainings through tools/train.py and
evaluation through tools/test.py on the ADE20K-layout demo set (one of them learns: mIoU clearly above an untrained
model's)."""
import glob
import importlib.util
import os.path as osp
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config, model_complexity
from effvit_plugins.models.spec import families
from effvit_plugins.utils import published
from effvit_plugins.utils.complexity import count_macs, count_params

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, "scripts"))
from configgen import mmseg as gen  # noqa: E402

SEM_FPN = [s for s in families() if s.seg_head is None]  # the families with Semantic FPN configs
CONFIGS = sorted(osp.join(ROOT, gen.sem_fpn_path(s, v, ds)) for s in SEM_FPN for v in s.variants
                 for ds in gen.SEM_FPN_DATASETS)
(DEMO_CONFIG,) = glob.glob(osp.join(ROOT, "configs", "demo", "fpn_*_ade20k-demo-*.py"))  # hand-written
SMALLEST = {s.name: s.variants[0] for s in SEM_FPN}  # backbone type -> its first (smallest) variant


def _cfg_of(btype, arch, dataset="ade20k"):
    (spec,) = [s for s in SEM_FPN if s.name == btype]
    return osp.join(ROOT, gen.sem_fpn_path(spec, arch, dataset))


# ------------------------------------------------------------------------------------------------------------
def test_one_config_per_variant_and_dataset():
    assert CONFIGS == sorted(p for p in glob.glob(osp.join(ROOT, "configs", "*", "fpn_*.py"))
                             if osp.basename(osp.dirname(p)) != "demo")
    assert len(CONFIGS) == 2 * sum(len(s.variants) for s in SEM_FPN)
    for path in CONFIGS:
        # OpenMMLab scheme: {algorithm}_{backbone}_{gpus}xb{batch}-{schedule}_{dataset}-{crop}.py
        assert re.fullmatch(r"fpn_[a-z0-9-]+_8xb[24]-40k_(ade20k-512x512|cityscapes-512x1024)\.py",
                            osp.basename(path))
        with open(path) as f:
            header = " ".join(f.read().split("_base_")[0].replace("#", " ").split())
        row = [r for r in published.rows("segmentation") if r["config"] == osp.relpath(path, ROOT)]
        want = f"mIoU {published.figures(row[0])['mIoU'].text} (" if row else "none published"
        assert f"Published result: {want}" in header and "Recipe" in header


def test_default_recipe_is_the_schedule_base():
    """The generator's default Semantic FPN recipe (written into no config) is the schedule base's."""
    from mmengine.config import Config

    cfg = Config.fromfile(osp.join(ROOT, "configs", "_base_", "schedules", "adamw_poly_40k.py"))
    d = gen.DEFAULT_SEM_FPN
    assert (cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay) == (d.lr, d.weight_decay)
    assert cfg.param_scheduler[0].eta_min == d.min_lr


@pytest.mark.parametrize("spec", [s for s in SEM_FPN if "sem-fpn" in s.official_recipes], ids=lambda s: s.key)
def test_official_recipe(spec):
    recipe = spec.official_recipes["sem-fpn"]
    for v in spec.variants:
        cfg = load_config(_cfg_of(spec.name, v))
        opt = cfg.optim_wrapper.optimizer
        assert (opt.lr, opt.weight_decay, cfg.param_scheduler[0].eta_min) == (
            recipe.lr, recipe.weight_decay, recipe.min_lr)


@pytest.mark.parametrize("path", CONFIGS, ids=[osp.basename(p)[4:-3] for p in CONFIGS])
def test_params_and_macs_are_core_backbone_plus_mmseg_fpn(path, core_backbone_of):
    """Whole segmentor = our core backbone + mmseg's FPN + FPNHead with the same channels (upsampling FPN: + the 2x2
    transposed convs and their 3x3 output convs) in params; in MACs as tools/get_flops.py counts them too
    (smallest variant of each family; the others differ only in the backbone)."""
    from mmseg.models.decode_heads import FPNHead
    from mmseg.models.necks import FPN

    cfg = load_config(path)
    shape = (512, 512) if "ade20k" in path else (1024, 2048)
    with torch.device("meta"):
        model = build_model_from_cfg(cfg, device="meta")
        core = core_backbone_of(cfg.model.backbone)
    neck_cfg, head_cfg = dict(cfg.model.neck), dict(cfg.model.decode_head)
    extra = neck_cfg.get("num_extra_trans_convs", 0)
    with torch.device("meta"):
        fpn = FPN(in_channels=neck_cfg["in_channels"], out_channels=256, num_outs=len(core.out_channels))
        finer = nn.ModuleList([nn.ModuleList([nn.ConvTranspose2d(256, 256, 2, 2), nn.Conv2d(256, 256, 3, padding=1)])
                               for _ in range(extra)])
        head = FPNHead(**{k: v for k, v in head_cfg.items() if k not in ("type", "norm_cfg")},
                       norm_cfg=dict(type="BN", requires_grad=True))
    ref = nn.ModuleList([fpn, finer, head])
    assert neck_cfg["in_channels"] == core.out_channels
    assert (neck_cfg["out_channels"], head_cfg["channels"], head_cfg["dropout_ratio"]) == (256, 128, 0.1)  # fpn_r50
    assert count_params(model.backbone) == count_params(core) > 0
    assert count_params(model) == count_params(core) + count_params(ref)
    assert head_cfg["num_classes"] == (150 if "ade20k" in path else 19)
    if extra:  # strides 4..64: every backbone level feeds the head
        assert head_cfg["feature_strides"] == [4 << i for i in range(len(core.out_channels) + extra)]
    if cfg.model.backbone.arch != SMALLEST[cfg.model.backbone.type]:
        return

    feats = [torch.empty(1, c, -(-shape[0] // s), -(-shape[1] // s), device="meta")
             for c, s in zip(core.out_channels, core.out_strides)]

    def neck_head(_m, _x):
        outs = list(fpn(feats))
        x = outs[0]
        for up, conv in finer:
            x = up(x)
            outs.insert(0, conv(x))
        return head(outs)

    params, macs = model_complexity(model, shape)
    assert params == count_params(model)
    assert macs == count_macs(core, (1, 3) + shape) + count_macs(ref, (1,), forward=neck_head)


def test_get_flops_cli_prints_the_same_figures(monkeypatch, capsys):
    spec = next((s for s in SEM_FPN if s.upsample_neck), SEM_FPN[0])  # the upsampling FPN if a family has it
    path = _cfg_of(spec.name, spec.variants[0])
    monkeypatch.setattr(sys, "argv", ["tools/get_flops.py", path, "--shape", "512", "512"])
    _tool("get_flops").main()
    out = capsys.readouterr().out
    with torch.device("meta"):
        model = build_model_from_cfg(load_config(path), device="meta")
    params, macs = model_complexity(model, (512, 512))
    assert f"Params: {params / 1e6:.3f} M ({params})" in out and f"MACs: {macs / 1e9:.3f} G ({macs})" in out, out


# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("btype,arch", [(s.name, s.det_variant) for s in SEM_FPN if "sem-fpn" in s.official_recipes])
def test_official_sem_fpn_checkpoint_converts_and_loads_exactly(btype, arch, ef_dense_roundtrip):
    cfg = load_config(_cfg_of(btype, arch))
    src, fresh, _, printed = ef_dense_roundtrip(cfg, {"mmseg_version": "0.19.0"})  # the official mmseg 0.x layout
    assert "segmentation checkpoint" in printed
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(fresh(x, mode="tensor"), src(x, mode="tensor"))


# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("btype", sorted(SMALLEST))
def test_inference_api_at_odd_sizes(btype):
    """mmseg.apis.init_model/inference_model: full-size masks at the native sizes 97x131 and 512x512 and at 97x131
    through the config's test pipeline (resized to 512x704: EfficientFormerV2's official code needs multiples of
    32); stride-4 logits at the odd size."""
    from mmseg.apis import inference_model, init_model

    cfg = load_config(_cfg_of(btype, SMALLEST[btype]))
    torch.manual_seed(0)
    seg = init_model(cfg, None, device="cpu")
    native = cfg.copy()
    native.test_pipeline = [dict(type="LoadImageFromFile"), dict(type="PackSegInputs")]
    rng = np.random.default_rng(0)
    runs = [(native, (97, 131)), (native, (512, 512)), (cfg, (97, 131))]
    for pipeline_cfg, (h, w) in runs:
        seg.cfg = pipeline_cfg
        res = inference_model(seg, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        assert tuple(res.pred_sem_seg.data.shape) == (1, h, w)
        assert tuple(res.seg_logits.data.shape) == (150, h, w)
        assert torch.isfinite(res.seg_logits.data).all()
    with torch.no_grad():  # the network itself at the odd size
        out = seg(torch.randn(1, 3, 97, 131), mode="tensor")
    (spec,) = [s for s in SEM_FPN if s.name == btype]
    assert tuple(out.shape) == ((1, 150, 28, 36) if spec.upsample_neck else (1, 150, 25, 33))


# ------------------------------------------------------------------------------------------------------------
def _tool(name):
    """tools/<name>.py as a module: its main(argv) is the command line, run in this process (one import of
    torch/mmseg for all the runs below instead of one per subprocess)."""
    spec = importlib.util.spec_from_file_location(f"_effvit_tool_{name}", osp.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ade_demo(tmp_path_factory):
    from effvit_plugins.datasets import generate_ade20k_demo

    out = tmp_path_factory.mktemp("ade_demo")
    return generate_ade20k_demo(str(out), num_train=16, num_val=6, seed=0, log=lambda *a: None)["data_root"]


def demo_config_for(family_config, tmp_path):
    """The ADE20K demo config's settings on top of another family's ADE20K config."""
    with open(DEMO_CONFIG) as f:
        text = f.read()
    text, n = re.subn(r"^_base_ = \[.*?\]$", f"_base_ = [{family_config!r}]", text, flags=re.M)
    assert n == 1
    path = tmp_path / ("demo_" + osp.basename(family_config))
    path.write_text(text)
    return str(path)


def train_and_test(config, data_root, work, iters, capsys, train_opts=(), num_test=None):
    """tools/train.py for ``iters`` iterations (no validation), then tools/test.py on its checkpoint: the mIoU
    tools/test.py prints."""
    roots = [f"{s}_dataloader.dataset.data_root={data_root}/" for s in ("train", "val", "test")]
    _tool("train").main([config, "--work-dir", str(work), "--cfg-options", *roots, f"train_cfg.max_iters={iters}",
                         "train_cfg.val_interval=1000000", f"default_hooks.checkpoint.interval={iters}",
                         *train_opts])
    ckpt = work / f"iter_{iters}.pth"
    assert ckpt.is_file() and (work / "last_checkpoint").read_text().strip().endswith(ckpt.name)
    capsys.readouterr()
    _tool("test").main([config, str(ckpt), "--work-dir", str(work / "test"), "--cfg-options", *roots]
                       + ([f"test_dataloader.dataset.indices={num_test}"] if num_test else []))
    out = capsys.readouterr().out
    m = re.search(r"^mIoU: (\d+\.\d\d)$", out, re.M)
    assert m, out[-2000:]
    return float(m.group(1))


@pytest.mark.parametrize("btype", sorted(SMALLEST))
def test_tiny_training_and_evaluation(btype, ade_demo, tmp_path, capsys):
    """Each family's ADE20K config trains through tools/train.py and evaluates through tools/test.py."""
    cfg = demo_config_for(_cfg_of(btype, SMALLEST[btype]), tmp_path)
    miou = train_and_test(cfg, ade_demo, tmp_path, 2, capsys, ["train_dataloader.batch_size=2"], num_test=2)
    assert 0.0 <= miou <= 100.0


def constant_prediction_miou(data_root):
    """mIoU (as mmseg's IoUMetric, over the classes present) of the best constant prediction on the val set:
    the chance level a trained model must beat."""
    from PIL import Image

    counts = np.zeros(256, np.int64)
    for p in glob.glob(osp.join(data_root, "annotations", "validation", "*.png")):
        counts += np.bincount(np.asarray(Image.open(p)).ravel(), minlength=256)
    counts = counts[1:151]  # reduce_zero_label: 0 is ignored
    return 100.0 * counts.max() / counts.sum() / np.count_nonzero(counts)


def test_demo_config_learns(ade_demo, tmp_path, capsys):
    """The ADE20K demo config learns the demo scenes in 20 iterations: its mIoU is many times the
    best constant prediction's."""
    chance = constant_prediction_miou(ade_demo)
    assert 1.0 < chance < 8.0
    miou = train_and_test(DEMO_CONFIG, ade_demo, tmp_path, 20, capsys)
    assert miou > max(25.0, 5 * chance), (miou, chance)


def test_missing_ade20k_is_one_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data/ here
    with pytest.raises(SystemExit) as e:
        _tool("train").main([_cfg_of(SEM_FPN[0].name, SEM_FPN[0].variants[0])])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("error:") == 1 and "Traceback" not in err
    for needle in ("missing data_root 'data/ade/ADEChallengeData2016'", "ADE20KDataset",
                   "expected layout under data_root: images/{training,validation}/*.jpg",
                   "train_dataloader.dataset.data_root=/path/to/dataset/", "ln -s /path/to/dataset data/ade/",
                   "python tools/generate_demo_data.py --dataset ade20k", osp.relpath(DEMO_CONFIG, ROOT)):
        assert needle in err, err
    assert not (tmp_path / "work_dirs").exists()  # nothing built
