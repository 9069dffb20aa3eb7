"""Framework-free pieces shared by every backbone family.

``BackboneBase`` gives each family the options users of mmdet/mmseg/mmpretrain/Detectron2 backbones expect:
``out_indices``, ``frozen_stages`` and ``norm_eval``. A family only has to say which modules form its stem and
each of its stages (:meth:`BackboneBase.stem_modules` / :meth:`BackboneBase.stage_modules`).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Sequence

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


def resolve_arch(arch, arch_settings: Mapping[str, dict], family: str) -> dict:
    """Return a copy of the settings for ``arch`` (case-insensitive name or an explicit dict).

    Raises:
        ValueError: unknown variant name; the message lists the valid ones.
    """
    if isinstance(arch, Mapping):
        return dict(arch)
    key = str(arch).lower().replace("-", "").replace("_", "")
    table = {k.lower().replace("-", "").replace("_", ""): k for k in arch_settings}
    if key not in table:
        raise ValueError(
            f"Unknown {family} variant {arch!r}. Valid variants: {', '.join(arch_settings)}. "
            f"Pass one of these names as `arch` (or a dict with the same keys as an entry of the table)."
        )
    return dict(arch_settings[table[key]])


def normalize_out_indices(out_indices, num_stages: int, family: str) -> tuple:
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    out = []
    for i in out_indices:
        j = i + num_stages if i < 0 else i
        if not 0 <= j < num_stages:
            raise ValueError(
                f"{family}: out_indices entry {i} is out of range; this backbone has {num_stages} stages "
                f"(valid indices 0..{num_stages - 1}, or negative from the end)."
            )
        out.append(j)
    return tuple(out)


def check_in_channels(x, expected: int, family: str) -> None:
    if x.dim() != 4 or x.shape[1] != expected:
        raise ValueError(
            f"{family} expects an input of shape (N, {expected}, H, W) but got {tuple(x.shape)}. "
            f"Set `in_channels={x.shape[1] if x.dim() == 4 else '?'}` when building the backbone, "
            f"or feed {expected}-channel images."
        )


class BackboneBase(nn.Module):
    """Mixin implementing ``frozen_stages`` and ``norm_eval`` for a staged backbone.

    Stage numbering follows ``out_indices``: stage ``i`` produces output ``i``. ``frozen_stages = k`` (k >= 0)
    puts the stem and stages ``0..k`` in eval mode and stops their gradients; ``-1`` freezes nothing.
    ``norm_eval=True`` keeps every BatchNorm layer in eval mode while training (running statistics fixed).
    """

    frozen_stages: int = -1
    norm_eval: bool = False

    # ---- to be provided by each family ----
    def stem_modules(self) -> List[nn.Module]:  # pragma: no cover - abstract
        return []

    def stage_modules(self) -> List[nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- shared behaviour ----
    def _check_frozen_stages(self, frozen_stages: int, num_stages: int, family: str) -> int:
        if not -1 <= frozen_stages < num_stages:
            raise ValueError(f"{family}: frozen_stages must be in [-1, {num_stages - 1}], got {frozen_stages}.")
        return frozen_stages

    def _frozen_modules(self) -> Iterable[nn.Module]:
        if self.frozen_stages < 0:
            return []
        stages = self.stage_modules()
        return list(self.stem_modules()) + list(stages[: self.frozen_stages + 1])

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            if m is None:
                continue
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


def set_norm_eps(module: nn.Module, eps: float) -> None:
    """Set ``eps`` of every BatchNorm/LayerNorm/GroupNorm below ``module`` (the official L-series uses 1e-7)."""
    for m in module.modules():
        if isinstance(m, (_BatchNorm, nn.LayerNorm, nn.GroupNorm)):
            m.eps = eps


def stage_channels_strides(channels: Sequence[int], strides: Sequence[int], out_indices) -> Dict[str, list]:
    return {"channels": [channels[i] for i in out_indices], "strides": [strides[i] for i in out_indices]}
