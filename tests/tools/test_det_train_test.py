"""tools/train.py and tools/test.py on detection configs, end to end on the generated COCO / LVIS demo sets, on the
CPU. The tools' ``main(argv)`` run in this process (their command lines, without one torch/mmdet import per run).

For the first (smallest) variant of each family, RetinaNet and Mask R-CNN are trained from scratch for a few dozen
iterations with the backbone and neck settings of our COCO config (on the demo configs' data, schedule and narrow heads, fixed
seed): the loss falls, tools/test.py prints bbox (and segm) mAP from pycocotools and draws boxes and masks, and the
mAP is clearly above that of the same model untrained (evaluated with the same dataset and CocoMetric; an untrained
detector's empty result counts as 0). The demo data is generated once per module.
"""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

from effvit_plugins.models.spec import families

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, "scripts"))
from configgen import mmdet as gen  # noqa: E402

TRAIN = osp.join(ROOT, "tools", "train.py")
TEST = osp.join(ROOT, "tools", "test.py")
# the hand-written demo configs (data, schedule, narrow heads)
DEMO = {d: glob.glob(osp.join(ROOT, "configs", "demo", f"{d}_*_coco-demo-*.py"))[0]
        for d in ("mask-rcnn", "retinanet")}
KINDS = {k.key: k for k in gen.KINDS}
# the first variant of every family: its COCO config's backbone + neck settings are trained
FAMILIES = {s.key: s for s in families()}
# batches of 4 images, AdamW lr 1e-3 after a 5-iteration warm-up, linear decay over the last 10. Measured on the
# demo set: after 40 iterations Mask R-CNN reaches bbox mAP 0.09-0.28 except EfficientViT-MSRA-M0 (0.044; 0.158
# after 60), RetinaNet 0.11 except EfficientViT-B0 (0.048; 0.066 after 60, 0.113 after 80)
ITERS = {"retinanet": 80, "mask-rcnn": 60}
NUM_VAL = 8


def run(args, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="PASSIVE", PYTHONWARNINGS="ignore",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable] + [str(a) for a in args], cwd=str(cwd), env=env, capture_output=True,
                       text=True, timeout=timeout)
    r.output = r.stdout + r.stderr
    return r


def data_options(root, kind="coco", with_val=True):
    root = str(root).rstrip("/") + "/"
    ann = "annotations/instances_val2017.json" if kind == "coco" else "annotations/lvis_v1_val.json"
    train_key = "train_dataloader.dataset" + (".dataset" if kind == "lvis" else "")
    opts = [f"{train_key}.data_root={root}", f"test_dataloader.dataset.data_root={root}",
            f"test_evaluator.ann_file={root}{ann}"]
    if with_val:
        opts += [f"val_dataloader.dataset.data_root={root}", f"val_evaluator.ann_file={root}{ann}"]
    return opts


def write_config(path, detector, family):
    """A config = the demo config of ``detector`` with the backbone / neck of the family's COCO config, trained for
    ``ITERS[detector]`` iterations without validation (tools/test.py evaluates afterwards)."""
    from mmengine.config import Config

    spec = FAMILIES[family]
    iters = ITERS[detector]
    real = Config.fromfile(osp.join(ROOT, gen.config_path(spec, spec.variants[0], KINDS[detector], "coco")))
    backbone = dict(real.model.backbone.to_dict(), norm_eval=False)  # from scratch: BN statistics are trained
    neck = {k: v for k, v in real.model.neck.to_dict().items() if k != "_delete_"}
    neck["out_channels"] = 64  # the demo configs' width
    text = (f"_base_ = [{DEMO[detector]!r}]\n"
            f"model = dict(backbone=dict(_delete_=True, **{backbone!r}), neck=dict(_delete_=True, **{neck!r}))\n"
            f"train_cfg = dict(max_iters={iters}, val_interval={iters})\n"
            "val_cfg = None\nval_dataloader = None\nval_evaluator = None\n"
            "param_scheduler = [\n"
            "    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=5),\n"
            f"    dict(type='LinearLR', start_factor=1.0, end_factor=0.1, by_epoch=False, begin={iters - 10}, "
            f"end={iters}),\n]\n"
            f"test_dataloader = dict(dataset=dict(indices={NUM_VAL}))\n"
            "default_hooks = dict(logger=dict(interval=5))\n"
            "log_processor = dict(window_size=5)\n")
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.fixture(scope="module")
def coco_demo(tmp_path_factory):
    from effvit_plugins.datasets import generate_coco_demo

    out = tmp_path_factory.mktemp("coco_demo")
    generate_coco_demo(str(out), num_train=40, num_val=12, seed=0, log=lambda *a: None)
    return out


def untrained_metrics(config, data_root):
    """The COCO metrics of the config's model as initialised (no training), on the same val images, in-process."""
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.evaluator import Evaluator
    from mmengine.registry import DATASETS, MODELS, DefaultScope

    import effvit_plugins  # noqa: F401

    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(dict(o.split("=", 1) for o in data_options(data_root, with_val=False)))
    with DefaultScope.overwrite_default_scope("mmdet"):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.eval()
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        evaluator = Evaluator(cfg.test_evaluator)
        evaluator.dataset_meta = dataset.metainfo
        with torch.no_grad():
            for i in range(len(dataset)):
                batch = pseudo_collate([dataset[i]])
                evaluator.process(data_samples=model.test_step(batch), data_batch=batch)
        return evaluator.evaluate(len(dataset))


def losses(work):
    """The training loss logged every 5 iterations, from the run's log file (the visualizer's scalars.json is not
    per run: mmdet's runtime names one global visualizer)."""
    (log,) = glob.glob(str(work / "*" / "*.log"))
    with open(log) as f:
        return [float(m) for m in re.findall(r"Iter\(train\) \[\s*\d+/\d+\].*? loss: ([\d.]+)", f.read())]


def map_lines(stdout):
    return {m[0]: float(m[1]) for m in re.findall(r"^(bbox|segm) mAP: (\d+\.\d+)", stdout, re.M)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("detector", ["retinanet", "mask-rcnn"])
def test_train_then_test_beats_untrained(detector, family, coco_demo, tmp_path, capsys, load_tool):
    config = str(write_config(tmp_path / f"{detector}_{family}.py", detector, family))
    work = tmp_path / "work"
    options = data_options(coco_demo, with_val=False)
    load_tool("train").main([config, "--work-dir", str(work), "--cfg-options"] + options)
    loss = losses(work)
    assert len(loss) == ITERS[detector] // 5, loss
    assert sum(loss[-2:]) / 2 < 0.7 * sum(loss[:2]) / 2, loss  # the loss falls
    ckpt = work / f"iter_{ITERS[detector]}.pth"
    assert ckpt.is_file()

    show = tmp_path / "pictures"
    capsys.readouterr()
    load_tool("test").main([config, str(ckpt), "--work-dir", str(tmp_path / "test"), "--show-dir", str(show),
                            "--cfg-options"] + options)
    out = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in out  # pycocotools
    trained = map_lines(out)
    tasks = ["bbox", "segm"] if detector == "mask-rcnn" else ["bbox"]
    assert sorted(trained) == tasks, out[-2000:]
    assert len(glob.glob(str(show / "*.jpg"))) == NUM_VAL

    before = untrained_metrics(config, coco_demo)
    for task in tasks:
        untrained = before.get(f"coco/{task}_mAP", 0.0)  # CocoMetric returns nothing when nothing was detected
        assert trained[task] >= untrained + 0.05, (task, trained, before)


# ----------------------------------------------------------------------------------------------------------------
# LVIS v1: the real LVIS config (1203 classes, ClassBalancedDataset, LVISMetric) for a few iterations
# ----------------------------------------------------------------------------------------------------------------
LVIS_CONFIG = osp.join(ROOT, gen.config_path(families()[0], families()[0].det_variant, KINDS["mask-rcnn"], "lvis"))
LVIS_TINY = """
_base_ = [{base!r}]
# the LVIS config at demo scale: 128x128 images, fewer proposals / sampled RoIs / detections, 4 iterations
model = dict(
    backbone=dict(norm_eval=False),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50), rcnn=dict(max_per_img=20)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize', scales=[(128, 112), (128, 128)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(dataset=dict(pipeline=train_pipeline, filter_cfg=dict(min_size=4))))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=4, val_interval=4)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval=4))
log_processor = dict(by_epoch=False, window_size=1)
"""


def test_lvis_train_and_evaluate(tmp_path):
    """ClassBalancedDataset (repeat factors from the demo set's category frequencies), 1203-class heads, and
    LVISMetric (LVIS API, box and mask AP with the rare / common / frequent split) at the end of training."""
    from effvit_plugins.datasets import generate_lvis_demo

    data = tmp_path / "lvis_demo"
    generate_lvis_demo(str(data), num_train=8, num_val=3, seed=0, log=lambda *a: None)
    config = tmp_path / "lvis_tiny.py"
    config.write_text(LVIS_TINY.format(base=LVIS_CONFIG))
    r = run([TRAIN, config, "--work-dir", tmp_path / "work", "--cfg-options"] + data_options(data, "lvis"),
            cwd=tmp_path)
    assert r.returncode == 0, r.output[-5000:]
    assert "Iter(train) [4/4]" in r.output
    for task in ("bbox", "segm"):
        m = re.search(rf"lvis/{task}_AP: ([\d.-]+)\s+lvis/{task}_AP50: .*lvis/{task}_APr: ([\d.-]+)\s+"
                      rf"lvis/{task}_APc: ([\d.-]+)\s+lvis/{task}_APf: ([\d.-]+)", r.output)
        assert m, r.output[-4000:]
        assert all(-1.0 <= float(v) <= 1.0 for v in m.groups())
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=300 catIds=all]" in r.output


def test_test_tool_metric_lines():
    """tools/test.py's summary of COCO and LVIS metrics (the keys mmdet's CocoMetric / LVISMetric return)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_test_tool", TEST)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    lines = tool.metric_lines({"coco/bbox_mAP": 0.5, "coco/bbox_mAP_50": 0.8, "coco/bbox_mAP_75": 0.6,
                               "coco/segm_mAP": 0.4, "lvis/segm_AP": 0.25, "lvis/segm_APr": 0.1,
                               "lvis/segm_AP50": 0.3, "lvis/segm_APc": 0.2, "lvis/segm_APf": 0.3})
    assert lines == ["bbox mAP: 0.500  (AP50 0.800, AP75 0.600, COCO COCOeval)",
                     "segm mAP: 0.400  (COCO COCOeval)",
                     "segm mAP: 0.250  (AP50 0.300, APr 0.100, APc 0.200, APf 0.300, LVIS LVISEval)"]
