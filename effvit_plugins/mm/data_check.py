"""The "dataset missing" check of ``tools/train.py`` / ``tools/test.py``, run before anything heavy is built.

Without it a missing dataset surfaces as a traceback from deep inside the Runner (mmseg: an empty dataset or a
``FileNotFoundError`` from ``scandir``; mmdet: from ``pycocotools``) after the model has been built. Here the
config's dataloaders are inspected statically: for every dataset (also inside ``RepeatDataset`` /
``ConcatDataset`` / ... wrappers) the folders named by ``data_root`` + ``data_prefix`` (mmseg ``img_path`` /
``seg_map_path``, mmdet ``img`` / ``seg`` / ...) and a non-empty ``ann_file`` must exist, resolved the way
mmengine's ``BaseDataset`` does (relative to ``data_root``; ``data_root`` itself relative to the working
directory), and so must the ``ann_file`` of the evaluator scoring the dataloader (mmdet's ``CocoMetric`` /
``LVISMetric`` read the ground truth from their own path, which ``--cfg-options ...data_root=`` does not move).
Remote paths (``s3://`` etc.) are not checked. The message gives the expected layout and the demo set that stands
in for the dataset (:mod:`effvit_plugins.datasets.layouts`); the tools add how to train on it (:class:`DemoRun`:
a config of the demo set and, in a source checkout, a make target: :func:`effvit_plugins.resources.demo_runs`).
"""
from __future__ import annotations

import os
import os.path as osp
import sys
from typing import List, Mapping, NamedTuple, Optional, Sequence

from ..datasets.layouts import DEFAULT_DEMO, for_mm_type, get_layout


class DemoRun(NamedTuple):
    """How the tools train on a demo set: a config reading it, and a make target doing generate + train + test."""

    config: Optional[str] = None
    make_target: Optional[str] = None


# the evaluator that scores each dataloader (its ann_file, e.g. COCO's, is read too)
_EVALUATORS = {"val_dataloader": "val_evaluator", "test_dataloader": "test_evaluator"}


class Missing(NamedTuple):
    key: str        # config key of the dataset, e.g. 'train_dataloader.dataset'
    dtype: str      # dataset type
    kind: str       # 'directory' | 'file'
    path: str       # as resolved (possibly relative to the working directory)
    data_root: Optional[str]


def _is_remote(path: str) -> bool:
    return "://" in path


def _join(root, path):
    if not root or osp.isabs(path) or _is_remote(path):
        return path
    return osp.join(root, path)


def _leaf_datasets(ds, key: str):
    """Yield ``(key, dataset_cfg)`` of the datasets that read files, descending into dataset wrappers."""
    if not isinstance(ds, Mapping):
        return
    if isinstance(ds.get("dataset"), Mapping):  # RepeatDataset, ClassBalancedDataset, MultiImageMixDataset, ...
        yield from _leaf_datasets(ds["dataset"], f"{key}.dataset")
        return
    if isinstance(ds.get("datasets"), (list, tuple)):  # ConcatDataset
        for i, sub in enumerate(ds["datasets"]):
            yield from _leaf_datasets(sub, f"{key}.datasets.{i}")
        return
    yield key, ds


def _evaluators(cfg, loader_name: str):
    """``(key, evaluator_cfg)`` of the evaluator(s) scoring ``loader_name`` (a dict or a list of dicts)."""
    name = _EVALUATORS.get(loader_name)
    ev = cfg.get(name) if name else None
    if isinstance(ev, Mapping):
        return [(name, ev)]
    if isinstance(ev, (list, tuple)):
        return [(f"{name}.{i}", e) for i, e in enumerate(ev) if isinstance(e, Mapping)]
    return []


def find_missing_data(cfg, dataloaders: Sequence[str]) -> List[Missing]:
    """Paths that the datasets of ``cfg.<dataloader>`` (for each name in ``dataloaders``) need but do not exist,
    and the ``ann_file`` of the evaluator scoring it (``val_evaluator`` / ``test_evaluator``, e.g. COCO's).

    A missing ``data_root`` is reported alone (not each folder below it). The same path needed by several
    dataloaders is reported once per dataloader (callers group them).
    """
    missing: List[Missing] = []
    for name in dataloaders:
        loader = cfg.get(name)
        if not isinstance(loader, Mapping) or not isinstance(loader.get("dataset"), Mapping):
            continue
        leaves = list(_leaf_datasets(loader["dataset"], f"{name}.dataset"))
        for key, ds in leaves:
            root = ds.get("data_root") or ""
            dtype = str(ds.get("type", "dataset"))
            if root and not _is_remote(root) and not osp.isdir(root):
                missing.append(Missing(key, dtype, "directory", root, root))
                continue
            needed = []
            ann = ds.get("ann_file")
            if isinstance(ann, str) and ann:
                needed.append(("file", _join(root, ann)))
            prefix = ds.get("data_prefix")
            dirs = [v for v in prefix.values() if isinstance(v, str) and v] if isinstance(prefix, Mapping) else []
            needed += [("directory", _join(root, d)) for d in dirs]
            for kind, path in needed:
                if _is_remote(path):
                    continue
                if not (osp.isfile(path) if kind == "file" else osp.isdir(path)):
                    missing.append(Missing(key, dtype, kind, path, root or None))
        dtype = str(leaves[0][1].get("type", "dataset")) if leaves else "dataset"
        for key, ev in _evaluators(cfg, name):
            ann = ev.get("ann_file")
            if not isinstance(ann, str) or not ann or _is_remote(ann) or osp.isfile(ann):
                continue
            # a file below a data_root reported missing is covered by that line (the fix lists its key anyway)
            if any(m.path == ann or (m.path == m.data_root and ann.startswith(m.path.rstrip("/") + "/"))
                   for m in missing):
                continue
            missing.append(Missing(key, dtype, "file", ann, None))
    return missing


def _ann_relative(ann: str, roots: Sequence[str]) -> str:
    """``ann`` relative to the dataset root it lives in (``data/coco/annotations/x.json`` -> ``annotations/x.json``)."""
    for root in roots:
        r = root.rstrip("/") + "/"
        if root and ann.startswith(r):
            return ann[len(r):]
    return osp.basename(ann)


def format_missing_message(missing: Sequence[Missing], cfg, tool: str, config_path: str,
                           dataloaders: Sequence[str], demo_runs: Optional[Mapping[str, DemoRun]] = None) -> str:
    """The error message: what is missing, where we looked, and how to fix it (``demo_runs``: per dataset key of
    :mod:`effvit_plugins.datasets.layouts`, how to train on its demo set)."""
    lines = [f"error: dataset not found -- {tool} {config_path} reads data that is not there:"]
    grouped = {}
    for m in missing:
        grouped.setdefault((m.kind, m.path, m.dtype), []).append(m.key)
    for (kind, path, dtype), keys in grouped.items():
        what = "data_root" if any(m.path == m.data_root for m in missing if m.path == path) else kind
        lines.append(f"  missing {what} {path!r}  ({dtype}; {', '.join(keys)})")
    if any(not osp.isabs(m.path) for m in missing):
        lines.append(f"  (relative paths are resolved from the working directory {os.getcwd()})")
    info = next((for_mm_type(m.dtype) for m in missing if for_mm_type(m.dtype)), None)
    if info:
        lines.append(f"  expected layout under data_root: {info.layout}")
    # the --cfg-options keys of the data_root of every dataset the tool reads and of the evaluators' ann_file
    # (training: also test_dataloader, so the same options serve tools/test.py afterwards)
    keys, roots = [], []
    names = list(dataloaders)
    if "train_dataloader" in names:
        names += ["train_dataloader", "val_dataloader", "test_dataloader"]
    for name in dict.fromkeys(names):
        loader = cfg.get(name)
        if isinstance(loader, Mapping) and isinstance(loader.get("dataset"), Mapping):
            for k, ds in _leaf_datasets(loader["dataset"], f"{name}.dataset"):
                keys.append(f"{k}.data_root=/path/to/dataset/")
                roots.append(str(ds.get("data_root") or ""))
    for name in dict.fromkeys(names):
        for k, ev in _evaluators(cfg, name):
            ann = ev.get("ann_file")
            if isinstance(ann, str) and ann and not _is_remote(ann):
                keys.append(f"{k}.ann_file=/path/to/dataset/{_ann_relative(ann, roots)}")
    keys = list(dict.fromkeys(keys)) or [f"{n}.dataset.data_root=/path/to/dataset/" for n in
                                         ("train_dataloader", "val_dataloader", "test_dataloader")]
    missing_roots = list(dict.fromkeys(m.data_root for m in missing if m.data_root and m.path == m.data_root))
    lines.append("How to fix:")
    lines.append("  * point the config at your copy of the dataset:")
    extra = " CHECKPOINT" if tool.endswith("test.py") else ""
    lines.append(f"      python {tool} {config_path}{extra} --cfg-options " + " ".join(keys))
    if missing_roots:
        root = missing_roots[0].rstrip("/")
        mk = f"mkdir -p {osp.dirname(root)} && " if osp.dirname(root) and not osp.isdir(osp.dirname(root)) else ""
        lines.append(f"  * or link it to where the config looks:  {mk}ln -s /path/to/dataset {root}")
    demo = info or get_layout(DEFAULT_DEMO)
    run = (demo_runs or {}).get(demo.key, DemoRun())
    lines.append(f"  * or try the pipeline on the small synthetic {demo.title}-layout demo set instead:")
    lines.append(f"      {demo.demo_command()}    # writes {demo.demo_root} in seconds")
    if run.config:
        lines.append(f"      python tools/train.py {run.config}")
    if run.make_target:
        lines.append(f"    (`{run.make_target}` does both, then evaluates the trained model with tools/test.py)")
    else:
        if run.config:
            lines.append("    (a model sized for a CPU), or this config on the demo data:")
        lines.append(f"      python {tool} {config_path}{extra} --cfg-options "
                     + " ".join(k.replace("/path/to/dataset/", demo.demo_root) for k in keys))
    return "\n".join(lines)


def check_data_or_exit(cfg, dataloaders: Sequence[str], tool: str, config_path: str,
                       demo_runs: Optional[Mapping[str, DemoRun]] = None, exit_code: int = 2) -> None:
    """Print one message to stderr and exit with ``exit_code`` if a dataset folder/file is missing."""
    missing = find_missing_data(cfg, dataloaders)
    if missing:
        print(format_missing_message(missing, cfg, tool, config_path, dataloaders, demo_runs), file=sys.stderr)
        sys.exit(exit_code)


def train_dataloaders(cfg) -> List[str]:
    """The dataloaders a training run reads: train, plus val when validation is configured."""
    names = ["train_dataloader"]
    if cfg.get("val_cfg") is not None and cfg.get("val_dataloader") is not None \
            and cfg.get("val_evaluator") is not None:
        names.append("val_dataloader")
    return names
