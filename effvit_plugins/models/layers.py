"""Building blocks used by more than one family (one implementation each)."""
from __future__ import annotations

import itertools
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth per sample (residual branch dropped with probability ``drop_prob``)."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"


def drop_path_rates(drop_path_rate: float, depths) -> list:
    """Linearly increasing stochastic-depth rates, one list per stage."""
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


def relative_bias_index(q_size: Tuple[int, int], k_size: Tuple[int, int], q_stride: int = 1):
    """LeViT-style relative position index shared by MSRA EfficientViT and EfficientFormer V1/V2.

    Every (query, key) pair gets the index of its absolute offset ``(|dy|, |dx|)`` in the order offsets are first
    met while scanning queries then keys row-major. Queries may sit on a strided grid (``q_stride``) over the key
    grid (EfficientFormer V2's downsampling attention). Returns ``(num_offsets, idx)`` with ``idx`` of shape
    ``(Nq, Nk)`` (long).
    """
    q_points = list(itertools.product(range(q_size[0]), range(q_size[1])))
    k_points = list(itertools.product(range(k_size[0]), range(k_size[1])))
    offsets, idxs = {}, []
    for p1 in q_points:
        for p2 in k_points:
            off = (abs(p1[0] * q_stride - p2[0]), abs(p1[1] * q_stride - p2[1]))
            if off not in offsets:
                offsets[off] = len(offsets)
            idxs.append(offsets[off])
    return len(offsets), torch.tensor(idxs, dtype=torch.long).view(len(q_points), len(k_points))


def resize_bias_map(bias: torch.Tensor, size: Tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Interpolate a (heads, Hq*Wq_or_N, N) attention-bias map stored as (heads, N0, N0) to (heads, N, N)."""
    if bias.shape[-2:] == tuple(size):
        return bias
    return F.interpolate(bias.unsqueeze(0), size=size, mode=mode, align_corners=False).squeeze(0)


def autocast_off(x: torch.Tensor):
    """Context manager disabling autocast for ``x``'s device (meta tensors use the CPU autocast state)."""
    dev = x.device.type
    return torch.autocast(device_type="cpu" if dev == "meta" else dev, enabled=False)
