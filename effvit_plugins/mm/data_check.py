"""The "dataset missing" check of ``tools/train.py`` / ``tools/test.py``, run before anything heavy is built.

Without it a missing dataset surfaces as a traceback from deep inside the Runner (mmseg: an empty dataset or a
``FileNotFoundError`` from ``scandir``; mmdet: from ``pycocotools``) after the model has been built. Here the
config's dataloaders are inspected statically: for every dataset (also inside ``RepeatDataset`` /
``ConcatDataset`` / ... wrappers) the folders named by ``data_root`` + ``data_prefix`` (mmseg ``img_path`` /
``seg_map_path``, mmdet ``img`` / ``seg`` / ...) and a non-empty ``ann_file`` must exist, resolved the way
mmengine's ``BaseDataset`` does (relative to ``data_root``; ``data_root`` itself relative to the working
directory). Remote paths (``s3://`` etc.) are not checked.
"""
from __future__ import annotations

import os
import os.path as osp
import sys
from typing import List, Mapping, NamedTuple, Optional, Sequence

DEMO_CONFIG = "configs/demo/efficientvit-seghead_efficientvit-b0_1xb4-500iter_cityscapes-demo-128x256.py"
_LAYOUTS = {
    "CityscapesDataset": "leftImg8bit/{train,val}/<city>/*_leftImg8bit.png + "
                         "gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png",
    "ADE20KDataset": "images/{training,validation}/*.jpg + annotations/{training,validation}/*.png",
    "CocoDataset": "annotations/instances_{train,val}2017.json + {train,val}2017/*.jpg",
}
# dataset type -> (name, tools/generate_demo_data.py option, data_root of the demo set it writes, demo config)
_DEMO_SETS = {
    "CityscapesDataset": ("Cityscapes", "", "data/cityscapes_demo/", DEMO_CONFIG),
    "ADE20KDataset": ("ADE20K", " --dataset ade20k", "data/ade_demo/ADEChallengeData2016/",
                      "configs/demo/fpn_edgevit-xxs_1xb4-200iter_ade20k-demo-64x64.py"),
}


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


def find_missing_data(cfg, dataloaders: Sequence[str]) -> List[Missing]:
    """Paths that the datasets of ``cfg.<dataloader>`` (for each name in ``dataloaders``) need but do not exist.

    A missing ``data_root`` is reported alone (not each folder below it). The same path needed by several
    dataloaders is reported once per dataloader (callers group them).
    """
    missing: List[Missing] = []
    for name in dataloaders:
        loader = cfg.get(name)
        if not isinstance(loader, Mapping) or not isinstance(loader.get("dataset"), Mapping):
            continue
        for key, ds in _leaf_datasets(loader["dataset"], f"{name}.dataset"):
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
    return missing


def format_missing_message(missing: Sequence[Missing], cfg, tool: str, config_path: str,
                           dataloaders: Sequence[str]) -> str:
    lines = [f"error: dataset not found -- {tool} {config_path} reads data that is not there:"]
    grouped = {}
    for m in missing:
        grouped.setdefault((m.kind, m.path, m.dtype), []).append(m.key)
    for (kind, path, dtype), keys in grouped.items():
        what = "data_root" if any(m.path == m.data_root for m in missing if m.path == path) else kind
        lines.append(f"  missing {what} {path!r}  ({dtype}; {', '.join(keys)})")
    if any(not osp.isabs(m.path) for m in missing):
        lines.append(f"  (relative paths are resolved from the working directory {os.getcwd()})")
    layout = next((_LAYOUTS[m.dtype] for m in missing if m.dtype in _LAYOUTS), None)
    if layout:
        lines.append(f"  expected layout under data_root: {layout}")
    # the --cfg-options keys of the data_root of every dataset the tool reads
    # (training: also test_dataloader, so the same options serve tools/test.py afterwards)
    keys = []
    names = list(dataloaders)
    if "train_dataloader" in names:
        names += ["train_dataloader", "val_dataloader", "test_dataloader"]
    for name in dict.fromkeys(names):
        loader = cfg.get(name)
        if isinstance(loader, Mapping) and isinstance(loader.get("dataset"), Mapping):
            keys += [f"{k}.data_root" for k, _ in _leaf_datasets(loader["dataset"], f"{name}.dataset")]
    keys = list(dict.fromkeys(keys)) or ["train_dataloader.dataset.data_root", "val_dataloader.dataset.data_root",
                                         "test_dataloader.dataset.data_root"]
    roots = list(dict.fromkeys(m.data_root for m in missing if m.data_root and m.path == m.data_root))
    lines.append("How to fix:")
    lines.append("  * point the config at your copy of the dataset:")
    extra = " CHECKPOINT" if tool.endswith("test.py") else ""
    lines.append(f"      python {tool} {config_path}{extra} --cfg-options "
                 + " ".join(f"{k}=/path/to/dataset/" for k in keys))
    if roots:
        root = roots[0].rstrip("/")
        mk = f"mkdir -p {osp.dirname(root)} && " if osp.dirname(root) and not osp.isdir(osp.dirname(root)) else ""
        lines.append(f"  * or link it to where the config looks:  {mk}ln -s /path/to/dataset {root}")
    dtype = next((m.dtype for m in missing if m.dtype in _DEMO_SETS), "CityscapesDataset")
    lines += _demo_hint(dtype, tool, config_path, extra, keys)
    return "\n".join(lines)


def _demo_hint(dtype: str, tool: str, config_path: str, extra: str, keys: Sequence[str]) -> List[str]:
    """How to generate the synthetic demo set of ``dtype`` and run on it."""
    name, option, root, demo_config = _DEMO_SETS[dtype]
    lines = [f"  * or try the pipeline on the small synthetic {name}-layout demo set instead:",
             f"      python tools/generate_demo_data.py{option}    # writes {root} in seconds",
             f"      python tools/train.py {demo_config}"]
    if dtype == "CityscapesDataset":
        lines.append("    (`make demo` does both, then evaluates the trained model with tools/test.py)")
    else:
        lines.append("    (a model sized for a CPU), or this config on the demo data:")
        lines.append(f"      python {tool} {config_path}{extra} --cfg-options "
                     + " ".join(f"{k}={root}" for k in keys))
    return lines


def check_data_or_exit(cfg, dataloaders: Sequence[str], tool: str, config_path: str, exit_code: int = 2) -> None:
    """Print one message to stderr and exit with ``exit_code`` if a dataset folder/file is missing."""
    missing = find_missing_data(cfg, dataloaders)
    if missing:
        print(format_missing_message(missing, cfg, tool, config_path, dataloaders), file=sys.stderr)
        sys.exit(exit_code)


def train_dataloaders(cfg) -> List[str]:
    """The dataloaders a training run reads: train, plus val when validation is configured."""
    names = ["train_dataloader"]
    if cfg.get("val_cfg") is not None and cfg.get("val_dataloader") is not None \
            and cfg.get("val_evaluator") is not None:
        names.append("val_dataloader")
    return names
