"""Deploy-time graph rewrites: what an exported graph computes differently from eager PyTorch, and why.

The model cores only have hook points (:func:`effvit_plugins.models.layers.export_rewrite`, read by
``layers.upsample`` and ``layers.GroupNorm``); :func:`graph_rewrites` installs the implementations below while an
export runs (:func:`effvit_plugins.deploy.export_onnx` does). Outside an ONNX export nothing changes, also inside
the context. Framework-free: plain PyTorch.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.layers import export_rewrite, export_rewrites


@contextlib.contextmanager
def graph_rewrites(fixed_size: bool = False):
    """The rewrites of an ONNX export: always :func:`group_norm_per_channel`; with ``fixed_size`` (the graph runs
    at the traced size only) also :func:`fixed_size_upsample`. A dynamic export keeps ``Resize``: there the factor
    between two maps is not fixed (sides that are not multiples of 32). Nests and restores."""
    with export_rewrites(group_norm=group_norm_per_channel, upsample=fixed_size_upsample if fixed_size else None):
        yield


def exporting_fixed_size() -> bool:
    """True while a fixed-size export (:func:`graph_rewrites` with ``fixed_size``) is tracing the caller."""
    return export_rewrite("upsample") is not None


# ---------------------------------------------------------------------------------------------------------------
# Integer-factor upsampling as a convolution + DepthToSpace
# ---------------------------------------------------------------------------------------------------------------
def _cubic_weights(t: float, a: float = -0.75):
    """PyTorch's bicubic kernel (a = -0.75) for the 4 taps around a source position with fraction ``t``."""
    near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1  # noqa: E731  |d| <= 1
    far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # noqa: E731  1 < |d| < 2
    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


@functools.lru_cache(maxsize=None)
def upsample_phase_kernel(factor: int, mode: str) -> Tuple[Tuple[Tuple[float, ...], ...], int]:
    """1-D polyphase weights (``factor`` rows of ``2*pad+1`` taps) and the edge padding for upsampling by an
    integer ``factor`` with ``align_corners=False``: output ``factor*k + p`` is ``sum_j w[p][j] * in[k - pad + j]``
    on the edge-padded input. Equals ``F.interpolate`` with that scale: PyTorch clamps the taps that fall outside
    the input to the border pixel (bicubic) or clamps the source position at 0 (bilinear), and an edge pad
    reproduces both. Plain Python numbers, so that tracing records only constants."""
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"upsample_phase_kernel: mode must be 'bicubic' or 'bilinear', got {mode!r}")
    phases = []
    for p in range(factor):
        src = (p + 0.5) / factor - 0.5
        first = math.floor(src)
        t = src - first
        if mode == "bicubic":
            phases.append(dict(zip(range(first - 1, first + 3), _cubic_weights(t))))
        else:
            phases.append({first: 1.0 - t, first + 1: t})
    pad = max(max(-min(ph), max(ph)) for ph in phases)
    rows = tuple(tuple(ph.get(j - pad, 0.0) for j in range(2 * pad + 1)) for ph in phases)
    return rows, pad


def upsample_by_conv(x: torch.Tensor, factor: int, mode: str) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)`` for an integer ``factor``, as
    edge padding, one depthwise convolution with ``factor**2`` outputs per channel and a pixel shuffle."""
    rows, pad = upsample_phase_kernel(factor, mode)
    c = x.shape[1]
    kernel2d = [[[[a * b for b in rq] for a in rp]] for rp in rows for rq in rows]  # (factor**2, 1, k, k)
    weight = torch.tensor(kernel2d * c, dtype=x.dtype, device=x.device)
    y = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), weight, groups=c)
    return F.pixel_shuffle(y, factor)


def fixed_size_upsample(x: torch.Tensor, size, mode: str) -> Optional[torch.Tensor]:
    """The ``upsample`` rewrite of a fixed-size graph: an integer factor with the same value on both sides becomes
    :func:`upsample_by_conv` (onnxruntime's cubic ``Resize`` runs on one thread and took 0.26 s of the 0.64 s of
    the B1 segmentor at 1024x2048); anything else is not rewritten (None)."""
    if mode not in ("bicubic", "bilinear"):
        return None
    (h, w), (hi, wi) = (int(s) for s in size), x.shape[-2:]  # int(): sizes are constants in this graph
    if h // hi == w // wi > 1 and (h, w) == (h // hi * hi, w // wi * wi):
        return upsample_by_conv(x, h // hi, mode)
    return None


# ---------------------------------------------------------------------------------------------------------------
# GroupNorm with per-channel reductions
# ---------------------------------------------------------------------------------------------------------------
def group_norm_per_channel(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` written so that its ONNX graph averages within each channel first.

    Exported as is, ``GroupNorm(1, C)`` becomes one ``InstanceNormalization`` over all ``C*H*W`` values of a sample;
    onnxruntime's float32 reduction over that one long axis lost precision on the EfficientFormer-L1 stride-4 map at
    512x512 (786k values: 2.4e-4 relative error after the norm, against 3e-7 before it). Reducing per channel and
    then across the channels of a group (``ReduceMean`` twice) brings it to 6e-7.
    """
    n, c = x.shape[0], x.shape[1]
    t = x.reshape(n, norm.num_groups, c // norm.num_groups, -1)
    mean = t.mean(-1, keepdim=True).mean(2, keepdim=True)
    d = t - mean
    var = (d * d).mean(-1, keepdim=True).mean(2, keepdim=True)
    y = (d * torch.rsqrt(var + norm.eps)).reshape(x.shape)
    if norm.affine:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = y * norm.weight.view(shape) + norm.bias.view(shape)
    return y
