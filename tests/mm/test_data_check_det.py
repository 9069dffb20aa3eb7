"""A missing COCO / LVIS dataset stops tools/train.py and tools/test.py at once with one clear message: where we
looked, the expected layout, the --cfg-options that point the config elsewhere (data roots AND the evaluator's
annotation file, which mmdet reads from its own path), the ln -s alternative and the demo set."""
import os
import os.path as osp
import subprocess
import sys

from mmengine.config import Config

from effvit_plugins.mm.data_check import find_missing_data, format_missing_message

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
COCO_CFG = osp.join(ROOT, "configs", "efficientvit_msra", "mask-rcnn_efficientvit-msra-m4_upfpn_8xb2-1x_coco.py")
LVIS_CFG = osp.join(ROOT, "configs", "edgevit", "mask-rcnn_edgevit-xs_fpn_sample1e-3_8xb2-ms-1x_lvis-v1.py")


def run(tool, args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, osp.join(ROOT, "tools", tool)] + [str(a) for a in args], cwd=str(cwd),
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1, r.stderr
    return r.stderr


def test_train_coco_missing(tmp_path):
    err = run("train.py", [COCO_CFG], tmp_path)
    for needle in ("missing data_root 'data/coco/'  (CocoDataset; train_dataloader.dataset, val_dataloader.dataset)",
                   "expected layout under data_root: annotations/instances_{train,val}2017.json + {train,val}2017/",
                   "train_dataloader.dataset.data_root=/path/to/dataset/",
                   "test_dataloader.dataset.data_root=/path/to/dataset/",
                   "val_evaluator.ann_file=/path/to/dataset/annotations/instances_val2017.json",
                   "test_evaluator.ann_file=/path/to/dataset/annotations/instances_val2017.json",
                   "mkdir -p data && ln -s /path/to/dataset data/coco",
                   "python tools/generate_demo_data.py --dataset coco    # writes data/coco_demo/",
                   "python tools/train.py configs/demo/mask-rcnn_edgevit-xxs_fpn_1xb4-300iter_coco-demo-128x128.py",
                   "`make demo-det`"):
        assert needle in err, (needle, err)
    assert not osp.exists(tmp_path / "work_dirs")  # nothing was built


def test_test_lvis_missing(tmp_path):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"")
    err = run("test.py", [LVIS_CFG, ckpt], tmp_path)
    for needle in ("missing data_root 'data/lvis_v1/'  (LVISV1Dataset; test_dataloader.dataset)",
                   "annotations/lvis_v1_{train,val}.json + the COCO 2017 images",
                   f"python tools/test.py {LVIS_CFG} CHECKPOINT --cfg-options "
                   "test_dataloader.dataset.data_root=/path/to/dataset/ "
                   "test_evaluator.ann_file=/path/to/dataset/annotations/lvis_v1_val.json",
                   "python tools/generate_demo_data.py --dataset lvis    # writes data/lvis_v1_demo/",
                   "test_dataloader.dataset.data_root=data/lvis_v1_demo/",
                   "test_evaluator.ann_file=data/lvis_v1_demo/annotations/lvis_v1_val.json"):
        assert needle in err, (needle, err)


def test_evaluator_annotation_checked(tmp_path):
    """--cfg-options moved the dataset but not the evaluator: the evaluator's file is what is missing."""
    from effvit_plugins.datasets import generate_coco_demo

    data = str(tmp_path / "coco") + "/"
    generate_coco_demo(data, num_train=1, num_val=1, log=lambda *a: None)
    cfg = Config.fromfile(COCO_CFG)
    cfg.merge_from_dict({"test_dataloader.dataset.data_root": data})
    missing = find_missing_data(cfg, ["test_dataloader"])
    assert [(m.key, m.kind, m.path) for m in missing] == [
        ("test_evaluator", "file", "data/coco/annotations/instances_val2017.json")]
    msg = format_missing_message(missing, cfg, "tools/test.py", "cfg.py", ["test_dataloader"])
    assert "missing file 'data/coco/annotations/instances_val2017.json'  (CocoDataset; test_evaluator)" in msg
    cfg.merge_from_dict({"test_evaluator.ann_file": data + "annotations/instances_val2017.json"})
    assert find_missing_data(cfg, ["test_dataloader"]) == []
    # LVIS: class-balanced wrapper, images found through coco_url (data_prefix img='')
    lvis = Config.fromfile(LVIS_CFG)
    lvis.merge_from_dict({"train_dataloader.dataset.dataset.data_root": data})
    keys = {m.key for m in find_missing_data(lvis, ["train_dataloader", "val_dataloader"])}
    assert keys == {"train_dataloader.dataset.dataset", "val_dataloader.dataset"}
