"""Datasets for the Detectron2 configs: registration of the generated demo sets, and the "dataset missing" check.

Detectron2 registers COCO (``coco_2017_{train,val}``), LVIS v1 (``lvis_v1_{train,val}``) and Cityscapes
(``cityscapes_fine_sem_seg_{train,val}``) under ``$DETECTRON2_DATASETS`` (default ``./datasets``) when
``detectron2.data`` is imported. Importing :mod:`effvit_plugins.detectron2` adds the demo sets written by
``tools/generate_demo_data.py`` under the same root, with the same loaders, evaluators and metadata as the real
ones:

=============================================  =========================================  ======================
name                                           files (under ``$DETECTRON2_DATASETS``)      generate with
=============================================  =========================================  ======================
``coco_demo_train``, ``coco_demo_val``         ``coco_demo/annotations/instances_*2017``   ``--dataset coco``
``lvis_v1_demo_train``, ``lvis_v1_demo_val``   ``lvis_v1_demo/annotations/lvis_v1_*``      ``--dataset lvis``
``cityscapes_demo_sem_seg_{train,val}``        ``cityscapes_demo/{leftImg8bit,gtFine}/``   ``--dataset cityscapes``
=============================================  =========================================  ======================

(``python tools/generate_demo_data.py --dataset coco --out datasets/coco_demo``, etc.)

:func:`check_datasets` tells, before anything heavy is built, which files a config's datasets need and whether
they are there.
"""
from __future__ import annotations

import functools
import glob
import os
from typing import Callable, Dict, List, Sequence, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES
from detectron2.data.datasets.lvis import get_lvis_instances_meta, register_lvis_instances
from detectron2.data.detection_utils import get_fed_loss_cls_weights

from ..datasets.layouts import for_d2_name, get_layout

__all__ = ["DEMO_DATASETS", "DatasetMissingError", "check_datasets", "datasets_root", "fed_loss_weights",
           "load_cityscapes_train_ids", "register_demo_datasets"]

# demo name -> (generator --dataset, folder under the datasets root, split)
DEMO_DATASETS: Dict[str, tuple] = {
    f"{name}_{s}": (kind, get_layout(kind).demo_folder, s)
    for kind, name in (("coco", "coco_demo"), ("lvis", "lvis_v1_demo"), ("cityscapes", "cityscapes_demo_sem_seg"))
    for s in ("train", "val")
}
# the 19 Cityscapes training classes in train-id order, with their official colours
_BY_TRAIN_ID = sorted((c for c in CITYSCAPES_CATEGORIES if 0 <= c.get("trainId", 255) < 255), key=lambda c: c["trainId"])
CITYSCAPES_STUFF_CLASSES = [c["name"] for c in _BY_TRAIN_ID]
CITYSCAPES_STUFF_COLORS = [tuple(c["color"]) for c in _BY_TRAIN_ID]


class DatasetMissingError(FileNotFoundError):
    """A dataset a config uses is not registered or its files are not on disk (the message says where we looked
    and how to get it)."""


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` (default ``datasets``), as Detectron2 resolves it."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def load_cityscapes_train_ids(image_dir: str, gt_dir: str) -> List[dict]:
    """Semantic-segmentation dicts of a Cityscapes-layout folder that has only ``*_gtFine_labelTrainIds.png``
    (what the demo generator writes; Detectron2's own loader also needs the polygon and instance files)."""
    out = []
    for image in sorted(glob.glob(os.path.join(image_dir, "*", "*_leftImg8bit.png"))):
        city = os.path.basename(os.path.dirname(image))
        stem = os.path.basename(image)[: -len("_leftImg8bit.png")]
        label = os.path.join(gt_dir, city, f"{stem}_gtFine_labelTrainIds.png")
        if not os.path.isfile(label):
            raise DatasetMissingError(f"{image} has no label map {label}. Regenerate the demo set "
                                      f"(tools/generate_demo_data.py --dataset cityscapes --force).")
        out.append({"file_name": image, "sem_seg_file_name": label})
    if not out:
        raise DatasetMissingError(f"No *_leftImg8bit.png images in {image_dir}/<city>/.")
    return out


def register_demo_datasets(root: str = None) -> None:
    """Register the demo datasets under ``root`` (default :func:`datasets_root`); names already registered are
    left alone."""
    root = datasets_root() if root is None else root
    for name, (kind, folder, split) in DEMO_DATASETS.items():
        if name in DatasetCatalog.list():
            continue
        base = os.path.join(root, folder)
        if kind == "coco":
            register_coco_instances(name, {}, os.path.join(base, "annotations", f"instances_{split}2017.json"),
                                    os.path.join(base, f"{split}2017"))
        elif kind == "lvis":
            # the images are found through coco_url (".../train2017/<file>"), relative to the folder
            register_lvis_instances(name, get_lvis_instances_meta("lvis_v1"),
                                    os.path.join(base, "annotations", f"lvis_v1_{split}.json"),
                                    os.path.join(base, ""))
        else:
            image_dir = os.path.join(base, "leftImg8bit", split)
            gt_dir = os.path.join(base, "gtFine", split)
            DatasetCatalog.register(name, lambda x=image_dir, y=gt_dir: load_cityscapes_train_ids(x, y))
            MetadataCatalog.get(name).set(image_dir=image_dir, gt_dir=gt_dir, evaluator_type="sem_seg",
                                          ignore_label=255, stuff_classes=CITYSCAPES_STUFF_CLASSES,
                                          stuff_colors=CITYSCAPES_STUFF_COLORS)


def fed_loss_weights(dataset_names: Union[str, Sequence[str]], freq_weight_power: float) -> Callable:
    """The ``get_fed_loss_cls_weights`` argument of Detectron2's ``FastRCNNOutputLayers`` for a LazyConfig: a
    function of no arguments giving the per-class weights of the federated loss from the datasets' class image
    counts (``class_image_count`` metadata, LVIS), what the yacs path builds from ``DATASETS.TRAIN`` and
    ``MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER``. Written as
    ``L(fed_loss_weights)(dataset_names="${dataloader.train.dataset.names}", ...)``, the names follow the training
    set given on the command line, and the config stays serialisable (a lambda in it is not)."""
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    return functools.partial(get_fed_loss_cls_weights, names, freq_weight_power)


def _needed_paths(name: str) -> List[str]:
    meta = MetadataCatalog.get(name)
    return [p for p in (meta.get("json_file"), meta.get("image_root"), meta.get("image_dir"), meta.get("gt_dir"))
            if p]


def _how_to_get(name: str) -> str:
    root = datasets_root()
    env = os.getenv("DETECTRON2_DATASETS")
    where = (f"DETECTRON2_DATASETS={env}" if env else
             f"DETECTRON2_DATASETS is not set, so Detectron2 looks in ./{root} relative to the current directory")
    if name in DEMO_DATASETS:
        kind, folder, _ = DEMO_DATASETS[name]
        return (f"It is a generated demo set ({where}). Generate it with:\n"
                f"    {get_layout(kind).demo_command(os.path.join(root, folder))}")
    real = for_d2_name(name)
    if real is not None:
        demo_names = [n for n, v in DEMO_DATASETS.items() if v[0] == real.key]
        return (f"Put {real.title} under the datasets root in Detectron2's layout: {real.d2_layout} ({where}; set it "
                f"to the folder holding your datasets). To try the configs without it, generate the demo set:\n"
                f"    {real.demo_command(os.path.join(root, real.demo_folder))}\n"
                f"and train on it with DATASETS.TRAIN \"('{demo_names[0]}',)\" DATASETS.TEST "
                f"\"('{demo_names[1]}',)\".")
    return f"Check the files Detectron2's registration of {name!r} points to ({where})."


def check_datasets(names: Sequence[str]) -> None:
    """Raise :class:`DatasetMissingError` (one message for every problem) if a dataset in ``names`` is not
    registered or one of its files / folders is missing. Nothing is loaded."""
    problems = []
    registered = set(DatasetCatalog.list())
    for name in dict.fromkeys(names):
        if name not in registered:
            demo = ", ".join(DEMO_DATASETS)
            problems.append(f"Dataset {name!r} is not registered. Use one of Detectron2's builtin names (e.g. "
                            f"coco_2017_train, lvis_v1_train, cityscapes_fine_sem_seg_train) or a demo set "
                            f"({demo}), or register yours with DatasetCatalog.register before training.")
            continue
        missing = [p for p in _needed_paths(name) if not os.path.exists(p)]
        if missing:
            problems.append(f"Dataset {name!r}: not found; looked for {', '.join(os.path.abspath(p) for p in missing)}."
                            f"\n{_how_to_get(name)}")
    if problems:
        raise DatasetMissingError("\n\n".join(problems))


register_demo_datasets()
