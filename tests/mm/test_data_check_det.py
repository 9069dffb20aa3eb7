"""A missing COCO / LVIS dataset stops tools/train.py and tools/test.py at once with one clear message: where we
looked, the expected layout, the --cfg-options that point the config elsewhere (data roots AND the evaluator's
annotation file, which mmdet reads from its own path), the ln -s alternative and the demo set."""
import glob
import os.path as osp
import re

import pytest
from mmengine.config import Config

from effvit_plugins.mm.data_check import find_missing_data, format_missing_message

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# any family's COCO / LVIS Mask R-CNN config (they share the dataset settings)
COCO_CFG = sorted(glob.glob(osp.join(ROOT, "configs", "*", "mask-rcnn_*_coco.py")))[0]
LVIS_CFG = sorted(glob.glob(osp.join(ROOT, "configs", "*", "mask-rcnn_*_lvis-v1.py")))[0]


@pytest.fixture
def run(load_tool, monkeypatch, capsys, tmp_path):
    """The tool's command line (its main(argv), in this process) from an empty folder: exit status 2 and one
    error message on stderr."""
    def _run(tool, args):
        monkeypatch.chdir(tmp_path)  # no data/ here
        with pytest.raises(SystemExit) as e:
            load_tool(tool).main([str(a) for a in args])
        out = capsys.readouterr()
        assert e.value.code == 2, out.out[-2000:] + out.err[-3000:]
        assert "Traceback" not in out.err and out.err.count("error:") == 1, out.err
        return out.err
    return _run


def test_train_coco_missing(tmp_path, run):
    err = run("train", [COCO_CFG])
    for needle in ("missing data_root 'data/coco/'  (CocoDataset; train_dataloader.dataset, val_dataloader.dataset)",
                   "expected layout under data_root: annotations/instances_{train,val}2017.json + {train,val}2017/",
                   "train_dataloader.dataset.data_root=/path/to/dataset/",
                   "test_dataloader.dataset.data_root=/path/to/dataset/",
                   "val_evaluator.ann_file=/path/to/dataset/annotations/instances_val2017.json",
                   "test_evaluator.ann_file=/path/to/dataset/annotations/instances_val2017.json",
                   "mkdir -p data && ln -s /path/to/dataset data/coco",
                   "python tools/generate_demo_data.py --dataset coco    # writes data/coco_demo/",
                   "`make demo-det`"):
        assert needle in err, (needle, err)
    # the demo config (effvit_plugins.resources.demo_runs) is the Mask R-CNN one make demo-det trains
    demo_config = re.search(r"python tools/train\.py (configs/demo/mask-rcnn_\S+_coco-demo-\S+\.py)\n", err)
    assert demo_config and osp.isfile(osp.join(ROOT, demo_config.group(1))), err
    assert not osp.exists(tmp_path / "work_dirs")  # nothing was built


def test_test_lvis_missing(tmp_path, run):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"")
    err = run("test", [LVIS_CFG, ckpt])
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
