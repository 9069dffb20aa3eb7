"""The model index: ``configs/<config_folder>/metafile.yml`` per folder and the root ``model-index.yml`` (its
``Import`` list), in mmpretrain's metafile schema (read by the ``modelindex`` package, ``mim search`` and
mmpretrain's ``ModelHub``).

* Collections: one per family: its title, paper, README, official code; ``Code.Version`` is this project's version
  (``effvit_plugins.__version__``), ``Metadata.Architecture`` the spec's ``architecture`` words.
* Models: one per generated OpenMMLab config (Detectron2 configs are not listed): ``Name`` = the config's file stem,
  ``Config`` relative to the repository root (register the index with ``config_prefix=<repository root>``).
  ``Metadata``: ``Parameters`` and ``FLOPs`` are this project's counts, those of the folder README's "Ours"
  column (FLOPs are multiply-accumulates, MACs, as in mmpretrain's metafiles; classifiers at 224x224, detectors
  backbone + neck at 800x1333 as tools/get_flops.py counts them, segmentors whole at the dataset's evaluation
  size). ``Results``: one entry per task of the config, with only the numbers of
  ``effvit_plugins/data/published_results.json`` (an empty ``Metrics`` when none are published).
  ``Weights`` and ``Converted From``: classifiers of families with an official direct download
  (``spec.weights_url_of``), loaded as they are (converted on load).
"""
from __future__ import annotations

import json
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from .common import MARKER, Generated

INDEX = "model-index.yml"
MASK = "??"  # Parameters / FLOPs when the generator runs without counting (the staleness test masks them)
DATASETS = {"imagenet": "ImageNet-1k", "coco": "COCO", "lvis": "LVIS v1", "cityscapes": "Cityscapes",
            "ade20k": "ADE20K"}
BOX = ("box_AP", "box_AP50", "box_AP75")
MASKS = ("mask_AP", "mask_AP50", "mask_AP75")
TASKS = {  # Generated.task -> [(metafile Task, the published metrics it reports)]
    "cls": [("Image Classification", ("top1",))],
    "retinanet": [("Object Detection", BOX)],
    "mask-rcnn": [("Object Detection", BOX), ("Instance Segmentation", MASKS)],
    "sem-fpn": [("Semantic Segmentation", ("mIoU",))],
    "seg-head": [("Semantic Segmentation", ("mIoU",))],
}
METRICS = {"top1": "Top 1 Accuracy", "box_AP": "box AP", "box_AP50": "box AP50", "box_AP75": "box AP75",
           "mask_AP": "mask AP", "mask_AP50": "mask AP50", "mask_AP75": "mask AP75", "mIoU": "mIoU"}
FRAMEWORKS = ("mmpretrain", "mmdet", "mmseg")  # the configs the index lists

Complexity = Callable[[Generated], Tuple[int, int]]


def metafile_path(folder: str) -> str:
    return f"configs/{folder}/metafile.yml"


def listed(entries: Sequence[Generated]) -> List[Generated]:
    """The generated configs the index lists (the OpenMMLab ones)."""
    return [g for g in entries if g.framework in FRAMEWORKS]


def model_name(g: Generated) -> str:
    return g.path.rsplit("/", 1)[1][:-len(".py")]


# ---------------------------------------------------------------------------------------------------------------
# YAML, written by hand so the files read as mmpretrain's do and do not depend on PyYAML's dumper settings
# ---------------------------------------------------------------------------------------------------------------
def _scalar(v) -> str:
    if isinstance(v, bool) or v is None:
        raise TypeError(f"metafile values are strings and numbers, got {v!r}")
    if isinstance(v, int):
        return str(v)
    text = str(v)
    try:
        plain = yaml.safe_load(f"k: {text}") == {"k": text}
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text)  # a JSON string is a YAML string


def _number(text: str):
    """A published figure as YAML writes it: as printed (its rounding stays visible), read back as a float."""
    float(text)
    return _Raw(text)


class _Raw(str):
    """Written as it is (a number in its printed form)."""


def _lines(value, indent: int) -> List[str]:
    pad = " " * indent
    out: List[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict) and not v:
                out.append(f"{pad}{k}: {{}}")
            elif isinstance(v, (dict, list)):
                out.append(f"{pad}{k}:")
                out += _lines(v, indent + 2)
            else:
                out.append(f"{pad}{k}: {v if isinstance(v, _Raw) else _scalar(v)}")
        return out
    for item in value:
        sub = _lines(item, indent + 2) if isinstance(item, (dict, list)) else [f"{pad}  {_scalar(item)}"]
        out.append(f"{pad}- {sub[0].lstrip()}")
        out += sub[1:]
    return out


def dump(doc: Dict[str, object], comments: Sequence[str] = ()) -> str:
    head = [f"# {c}" for c in comments] + [f"# {MARKER}"]
    body: List[str] = []
    for k, v in doc.items():
        body += [f"{k}:"] + _lines(v, 2) + [""]
    return "\n".join(head + [""] + body).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------------------------
# the documents
# ---------------------------------------------------------------------------------------------------------------
def collection(spec, entries: Sequence[Generated]) -> dict:
    import effvit_plugins

    data = list(dict.fromkeys(DATASETS[g.dataset] for g in entries))
    meta: Dict[str, object] = {"Training Data": data}
    if spec.architecture:
        meta["Architecture"] = list(spec.architecture)
    return {"Name": spec.title, "Metadata": meta,
            "Paper": {"Title": spec.paper.title, "URL": f"https://arxiv.org/abs/{spec.paper.arxiv}"},
            "README": f"configs/{spec.config_folder}/README.md",
            "Code": {"URL": f"https://github.com/{spec.paper.code}", "Version": effvit_plugins.__version__}}


def results(g: Generated) -> List[dict]:
    """One entry per task of the config, with its published numbers (``Metrics`` empty when none)."""
    figs = dict(g.published)
    return [{"Task": task, "Dataset": DATASETS[g.dataset],
             "Metrics": {METRICS[m]: _number(figs[m].text) for m in metrics if m in figs}}
            for task, metrics in TASKS[g.task]]


def model(g: Generated, complexity: Optional[Complexity]) -> dict:
    params, flops = complexity(g) if complexity else (_Raw(MASK), _Raw(MASK))
    entry: Dict[str, object] = {
        "Name": model_name(g), "In Collection": g.spec.title, "Config": g.path,
        "Metadata": {"Training Data": DATASETS[g.dataset], "Parameters": params, "FLOPs": flops},
        "Results": results(g)}
    url = g.spec.weights_url_of(g.variant) if g.task == "cls" else None
    if url:
        entry["Weights"] = url
        entry["Converted From"] = {"Weights": url, "Code": f"https://github.com/{g.spec.paper.code}"}
    return entry


def metafile(folder: str, entries: Sequence[Generated], complexity: Optional[Complexity]) -> str:
    """``configs/<folder>/metafile.yml`` for the generated configs ``entries`` of the families in the folder."""
    entries = listed(entries)
    specs = list({g.spec.key: g.spec for g in entries}.values())
    doc = {"Collections": [collection(s, [g for g in entries if g.spec is s]) for s in specs],
           "Models": [model(g, complexity) for g in entries]}
    return dump(doc, [
        f"Model index of configs/{folder}/ (mmpretrain's metafile schema; listed by the root {INDEX}).",
        "Parameters / FLOPs: this project's counts, as the README's \"Ours\" column (FLOPs = multiply-accumulates,",
        "MACs, as in mmpretrain's metafiles; detectors: backbone + neck at 800x1333). Metrics: published numbers only",
        "(effvit_plugins/data/published_results.json); {} where none are published.",
    ])


def model_index(folders: Sequence[str]) -> str:
    return dump({"Import": [metafile_path(f) for f in folders]},
                ["The model index of effvit_plugins (mim search, mmpretrain's ModelHub with config_prefix = this "
                 "folder)."])
