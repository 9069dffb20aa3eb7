"""The published figures of the model families (``effvit_plugins/data/published_results.json``), one source each.

A row's ``family`` is a family key (:func:`effvit_plugins.models.spec.get_family`); the family's name and paper are
in its spec, not here.

Used by ``tools/paper_tables.py`` and by the tests that check our models against the official ones. A number is
kept as the string its source printed (``"9.1"``, ``"0.079"``), so its rounding is known: :func:`within_rounding`
tells whether a measured value rounds to it.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Dict, List, Optional, Tuple

DATA_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "published_results.json")


@dataclasses.dataclass(frozen=True)
class Figure:
    """One published number: ``text`` as printed, ``source`` a key of the data file's ``sources``."""

    text: str
    source: str

    @property
    def value(self) -> float:
        return float(self.text)

    @property
    def half_unit(self) -> float:
        """Half a unit of the last printed digit: the rounding of the number."""
        decimals = len(self.text.split(".", 1)[1]) if "." in self.text else 0
        return 0.5 * 10.0 ** -decimals


def within_rounding(measured: float, figure: Figure, slack: float = 1e-9) -> bool:
    """True when ``measured`` rounds to the printed figure (``|measured - figure| <= half a unit``)."""
    return abs(measured - figure.value) <= figure.half_unit * (1 + slack) + slack


@functools.lru_cache(maxsize=1)
def load(path: str = DATA_FILE) -> dict:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for section in ("classification", "segmentation", "detection"):
        for row in data[section]:
            for group in ("published", "official_code"):
                for key, (text, source) in row.get(group, {}).items():
                    float(text)  # every figure is a number
                    if source not in data["sources"]:
                        raise ValueError(f"{path}: {row['family']} {row['variant']} {key}: unknown source {source!r}")
    return data


def figures(row: dict, group: str = "published") -> Dict[str, Figure]:
    """``{metric: Figure}`` of a row's ``published`` or ``official_code`` group."""
    return {k: Figure(str(t), s) for k, (t, s) in row.get(group, {}).items()}


def rows(section: str) -> List[dict]:
    """The rows of ``'classification'``, ``'segmentation'`` or ``'detection'``."""
    return list(load()[section])


def config_name(row: dict) -> str:
    """The row's config file name without folder and extension."""
    return os.path.splitext(os.path.basename(row["config"]))[0]


def official_complexity(section: str) -> Dict[str, Tuple[Figure, Optional[Figure]]]:
    """``{config name: (params M, MACs G)}`` measured from the official code where known, otherwise as published
    (``None`` when neither is known)."""
    out = {}
    for row in rows(section):
        official, published = figures(row, "official_code"), figures(row)
        out[config_name(row)] = tuple(official.get(k) or published.get(k) for k in ("params_M", "macs_G"))
    return out


def source_text(key: str) -> str:
    return load()["sources"][key]
