"""What every demo-dataset generator shares: the parameter marker, the completeness check, the refusal to write
into a folder that may hold a real dataset, and the per-image random generator.

A generator writes ``<root>/<marker>`` (JSON ``{"params": ..., "complete": bool, ...}``) before its first file
and marks it complete after its last, so an interrupted run is redone and a finished one is skipped. Image ``i``
of split ``s`` uses :func:`image_rng` ``(seed, s, i)``: it does not depend on how many images are generated.
Needs only numpy (no torch / OpenMMLab).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import shutil
from typing import Iterable, Optional, Sequence

import numpy as np

__all__ = ["image_rng", "is_complete", "prepare_output", "read_marker", "write_complete_marker"]


def image_rng(seed: int, split_index: int, index: int) -> np.random.Generator:
    """The random generator of image ``index`` of split number ``split_index``."""
    return np.random.default_rng([seed, split_index, index])


def read_marker(root: str, marker: str) -> Optional[dict]:
    try:
        with open(osp.join(root, marker)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_complete(root: str, marker: str, params: dict, files: Iterable[str]) -> bool:
    """True when ``root`` holds a complete set written with exactly ``params`` and all of ``files`` exist."""
    m = read_marker(root, marker)
    if not m or not m.get("complete") or m.get("params") != params:
        return False
    return all(osp.isfile(p) for p in files)


def prepare_output(root: str, marker: str, params: dict, guarded: Sequence[str]) -> None:
    """Make ``root`` ready for a fresh set generated with ``params``.

    ``guarded`` are the sub-folders the generator writes. If one exists and ``root`` has no marker of the same
    generator (``params['generator']``), it may be a real dataset: :class:`FileExistsError`, nothing touched.
    Otherwise they are removed (a previous demo set, possibly with other parameters) and an incomplete marker
    is written.
    """
    m = read_marker(root, marker)
    ours = m is not None and m.get("params", {}).get("generator") == params["generator"]
    for sub in guarded:
        d = osp.join(root, sub)
        if osp.exists(d):
            if not ours:
                raise FileExistsError(
                    f"{d} exists but {root} was not made by this generator (no {marker}); refusing to write "
                    f"into what may be a real dataset. Choose another --out.")
            shutil.rmtree(d)
    os.makedirs(root, exist_ok=True)
    with open(osp.join(root, marker), "w") as f:
        json.dump(dict(params=params, complete=False), f)


def write_complete_marker(root: str, marker: str, params: dict, **info) -> None:
    """Mark the set in ``root`` complete (``info``: extra JSON-serialisable facts, e.g. the classes drawn)."""
    with open(osp.join(root, marker), "w") as f:
        json.dump(dict(params=params, complete=True, **info), f, indent=1)
