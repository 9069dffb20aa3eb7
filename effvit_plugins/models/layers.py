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


# ---------------------------------------------------------------------------------------------------------------
# Inference-time caches (BN folding, expanded attention biases)
# ---------------------------------------------------------------------------------------------------------------
def cache_disabled() -> bool:
    """True while tracing / scripting / compiling: derived tensors must then be recomputed, not cached."""
    compiler = getattr(torch, "compiler", None)
    compiling = bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())
    return compiling or torch.jit.is_tracing() or torch.jit.is_scripting()


def tensor_stamp(*tensors):
    """Identity + in-place version of tensors, to know when something derived from them is stale.

    ``None`` when it cannot be known (inference tensors have no version counter): then nothing is cached.
    """
    try:
        return tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in tensors)
    except RuntimeError:
        return None


def is_inference(bn: nn.Module) -> bool:
    return not bn.training and not torch.is_grad_enabled()


def folded_conv_bn(owner: nn.Module, conv: nn.Conv2d, bn: nn.Module):
    """``(weight, bias)`` of ``conv`` followed by eval-mode ``bn`` as one convolution, cached on ``owner``.

    The cache (attribute ``_folded``) is recomputed whenever one of the source tensors is replaced or changed in
    place, and bypassed while tracing/compiling. Returns ``None`` when folding is not possible (no running stats).
    """
    parts = [getattr(bn, n, None) for n in ("weight", "bias", "running_mean", "running_var")]
    if any(not torch.is_tensor(t) for t in parts) or not hasattr(bn, "eps") or cache_disabled():
        return None
    sources = (conv.weight, *parts) + ((conv.bias,) if conv.bias is not None else ())
    stamp = tensor_stamp(*sources)
    if stamp is None:
        return None
    cached = getattr(owner, "_folded", None)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    owner._folded = (stamp, (weight, bias))
    return weight, bias


def conv_with_folded_bn(owner: nn.Module, conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor):
    """``bn(conv(x))``; at inference one convolution with the BN folded in (identical up to rounding)."""
    if is_inference(bn):
        folded = folded_conv_bn(owner, conv, bn)
        if folded is not None:
            return F.conv2d(x, folded[0], folded[1], conv.stride, conv.padding, conv.dilation, conv.groups)
    return bn(conv(x))


def use_channels_last(option, x: torch.Tensor) -> bool:
    """Whether to run a conv-heavy backbone channels-last: ``None`` = on CPU, where oneDNN is much faster with it
    for these models (measured 1.2-2.5x on EfficientViT-MIT and EfficientFormer; not used where it did not help)."""
    return (x.device.type == "cpu") if option is None else bool(option)


def like_memory_format(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last layout if ``ref`` is channels-last (keeps a channels-last network channels-last)."""
    if ref.dim() == 4 and not ref.is_contiguous() and ref.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


class LinearMlp(nn.Module):
    """Token MLP ``fc1 -> GELU -> fc2`` on (..., C) tensors (EdgeViT and EfficientFormer V1 key names)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))
