"""Where each dataset's files are expected, and the generated demo set that stands in for it.

The one table behind the "dataset missing" messages of the OpenMMLab tools (:mod:`effvit_plugins.mm.data_check`,
by dataset type) and of Detectron2 (:mod:`effvit_plugins.detectron2.data`, by registered dataset name). Plain
Python (no torch, OpenMMLab or Detectron2).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

__all__ = ["DATASETS", "DEFAULT_DEMO", "DatasetLayout", "for_d2_name", "for_mm_type", "get_layout"]

GENERATOR = "python tools/generate_demo_data.py"


@dataclasses.dataclass(frozen=True)
class DatasetLayout:
    """One dataset: its files and its demo set.

    key: the demo generator's ``--dataset`` value (``'coco'``).
    title: human name (``'COCO 2017'``).
    layout: the files under the dataset's folder (the OpenMMLab ``data_root``).
    demo_folder: the demo set's folder name (the generator writes ``data/<demo_folder>`` by default; Detectron2 reads
        ``$DETECTRON2_DATASETS/<demo_folder>``).
    demo_data_root: the ``data_root`` inside the demo folder, if not the folder itself.
    mm_types: the OpenMMLab dataset types that read it.
    d2_prefix / d2_layout: the names of Detectron2's builtin registrations of it (prefix) and the files they read
        under ``$DETECTRON2_DATASETS`` ('' if Detectron2 has none).
    """

    key: str
    title: str
    layout: str
    demo_folder: str
    mm_types: Tuple[str, ...]
    demo_data_root: str = ""
    d2_prefix: str = ""
    d2_layout: str = ""

    def demo_command(self, out: Optional[str] = None) -> str:
        """The command generating the demo set (into ``out``, else the generator's default folder)."""
        return f"{GENERATOR} --dataset {self.key}" + (f" --out {out}" if out else "")

    @property
    def demo_root(self) -> str:
        """``data_root`` of the demo set where the generator writes it by default."""
        return f"data/{self.demo_folder}/{self.demo_data_root}"


DATASETS: Tuple[DatasetLayout, ...] = (
    DatasetLayout(
        key="cityscapes", title="Cityscapes", mm_types=("CityscapesDataset",), demo_folder="cityscapes_demo",
        layout="leftImg8bit/{train,val}/<city>/*_leftImg8bit.png + "
               "gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png",
        d2_prefix="cityscapes_fine",
        d2_layout="cityscapes/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and "
                  "cityscapes/gtFine/{train,val}/<city>/*_gtFine_{labelIds,labelTrainIds,instanceIds}.png + "
                  "*_gtFine_polygons.json"),
    DatasetLayout(
        key="ade20k", title="ADE20K", mm_types=("ADE20KDataset",), demo_folder="ade_demo",
        demo_data_root="ADEChallengeData2016/",
        layout="images/{training,validation}/*.jpg + annotations/{training,validation}/*.png"),
    DatasetLayout(
        key="coco", title="COCO 2017", mm_types=("CocoDataset",), demo_folder="coco_demo",
        layout="annotations/instances_{train,val}2017.json + {train,val}2017/*.jpg",
        d2_prefix="coco_2017",
        d2_layout="coco/{train2017,val2017}/ and coco/annotations/instances_{train,val}2017.json"),
    DatasetLayout(
        key="lvis", title="LVIS v1", mm_types=("LVISV1Dataset",), demo_folder="lvis_v1_demo",
        layout="annotations/lvis_v1_{train,val}.json + the COCO 2017 images train2017/*.jpg, val2017/*.jpg "
               "(found through each image's coco_url)",
        d2_prefix="lvis_v1",
        d2_layout="coco/{train2017,val2017}/ (the COCO images) and lvis/lvis_v1_{train,val}.json"),
)
# the demo set suggested for a dataset type we do not know (the generator's default)
DEFAULT_DEMO = "cityscapes"


def get_layout(key: str) -> DatasetLayout:
    """The entry of ``key`` (a demo generator ``--dataset`` value); an error lists the valid ones."""
    for d in DATASETS:
        if d.key == key:
            return d
    raise ValueError(f"Unknown dataset {key!r}; valid: {', '.join(d.key for d in DATASETS)}.")


def for_mm_type(dataset_type: str) -> Optional[DatasetLayout]:
    """The entry of an OpenMMLab dataset type (``'CocoDataset'``), or None."""
    return next((d for d in DATASETS if dataset_type in d.mm_types), None)


def for_d2_name(name: str) -> Optional[DatasetLayout]:
    """The entry of one of Detectron2's builtin dataset names (``'coco_2017_val'``), or None."""
    return next((d for d in DATASETS if d.d2_prefix and name.startswith(d.d2_prefix)), None)
