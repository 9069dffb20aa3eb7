"""Building blocks used by more than one family (one implementation each)."""
from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
from typing import Dict, Optional, Tuple

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


# ---------------------------------------------------------------------------------------------------------------
# Upsampling for fixed-size ONNX graphs
# ---------------------------------------------------------------------------------------------------------------
_FIXED_SIZE_EXPORT = [False]


@contextlib.contextmanager
def fixed_size_export(enabled: bool = True):
    """While active (and ``torch.onnx`` is exporting), the graph is known to run at the traced size only.

    :func:`upsample` then writes integer-factor bicubic / bilinear upsampling as a grouped convolution and a
    ``DepthToSpace`` instead of a ``Resize`` (onnxruntime's cubic ``Resize`` runs on one thread and took 0.26 s
    of the 0.64 s of the B1 segmentor at 1024x2048). A dynamic export keeps ``Resize``: there the factor between
    two maps is not fixed (sides that are not multiples of 32).
    """
    before, _FIXED_SIZE_EXPORT[0] = _FIXED_SIZE_EXPORT[0], bool(enabled)
    try:
        yield
    finally:
        _FIXED_SIZE_EXPORT[0] = before


def exporting_fixed_size() -> bool:
    return _FIXED_SIZE_EXPORT[0] and torch.onnx.is_in_onnx_export()


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


def upsample(x: torch.Tensor, size, mode: str = "bicubic") -> torch.Tensor:
    """``F.interpolate(x, size, mode, align_corners=False)``; in a fixed-size ONNX export (see
    :class:`fixed_size_export`) an integer factor with the same value on both sides becomes
    :func:`upsample_by_conv`."""
    if exporting_fixed_size() and mode in ("bicubic", "bilinear"):
        (h, w), (hi, wi) = (int(s) for s in size), x.shape[-2:]  # int(): sizes are constants in this graph
        if h // hi == w // wi > 1 and (h, w) == (h // hi * hi, w // wi * wi):
            return upsample_by_conv(x, h // hi, mode)
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)  # traced sizes stay symbolic


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters, same keys) whose ONNX graph averages within each channel first.

    Exported as is, ``GroupNorm(1, C)`` becomes one ``InstanceNormalization`` over all ``C*H*W`` values of a sample;
    onnxruntime's float32 reduction over that one long axis lost precision on the EfficientFormer-L1 stride-4 map at
    512x512 (786k values: 2.4e-4 relative error after the norm, against 3e-7 before it). Reducing per channel and
    then across the channels of a group (``ReduceMean`` twice) brings it to 6e-7. Eager PyTorch is unchanged.
    """

    def forward(self, x):
        if not torch.onnx.is_in_onnx_export():
            return super().forward(x)
        n, c = x.shape[0], x.shape[1]
        t = x.reshape(n, self.num_groups, c // self.num_groups, -1)
        mean = t.mean(-1, keepdim=True).mean(2, keepdim=True)
        d = t - mean
        var = (d * d).mean(-1, keepdim=True).mean(2, keepdim=True)
        y = (d * torch.rsqrt(var + self.eps)).reshape(x.shape)
        if self.affine:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


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


def folded_conv_bn(conv: nn.Conv2d, bn: nn.Module):
    """``(weight, bias)`` of ``conv`` followed by eval-mode ``bn`` as one convolution.

    The one BN-folding cache of the package: stored on ``conv`` (attribute ``_bn_fold``) and recomputed whenever one
    of the source tensors is replaced, moved, cast or changed in place (their identity/version/device/dtype stamp
    changes); bypassed while tracing/compiling. Returns ``None`` when folding is not possible (no running stats).
    """
    parts = [getattr(bn, n, None) for n in ("weight", "bias", "running_mean", "running_var")]
    if any(not torch.is_tensor(t) for t in parts) or not hasattr(bn, "eps") or cache_disabled():
        return None
    sources = (conv.weight, *parts) + ((conv.bias,) if conv.bias is not None else ())
    stamp = tensor_stamp(*sources)
    if stamp is None:
        return None
    cached = conv.__dict__.get("_bn_fold")
    if cached is not None and cached[0] == stamp:
        return cached[1]
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.__dict__["_bn_fold"] = (stamp, (weight, bias))
    return weight, bias


SMALL_MAP_PIXELS = 4096  # N*H*W up to which an NCHW 1x1 conv is faster as a GEMM (64x64 at batch 1)


def pointwise_as_gemm(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv`` on the CPU map ``x`` is faster as one matrix product than through oneDNN: a 1x1, stride-1,
    ungrouped conv whose weights hold at least as many numbers as its input and output maps together (the deep
    stages of the large variants), or, on an NCHW map, any map up to ``SMALL_MAP_PIXELS`` pixels (there the
    convolution's fixed per-call cost dominates: 1.2-3x slower on 2 threads for the MSRA shapes). Channels-last
    maps larger than that stay convs (oneDNN is as fast or faster there), and so does everything under autocast
    (the convolution casts its bias with the rest; the GEMM path would add it in float32)."""
    if (x.device.type != "cpu" or x.dim() != 4 or torch.is_autocast_enabled("cpu") or conv.kernel_size != (1, 1)
            or conv.stride != (1, 1) or conv.groups != 1 or conv.dilation != (1, 1)
            or conv.padding not in ((0, 0), "valid")):
        return False
    b, c, h, w = x.shape
    if conv.out_channels * c >= b * h * w * (c + conv.out_channels):
        return True
    return b * h * w <= SMALL_MAP_PIXELS and not is_channels_last(x)


def pointwise_gemm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """A 1x1 convolution as one matrix product, in ``x``'s memory layout (NCHW or channels-last)."""
    b, c, h, w = x.shape
    w2 = weight.reshape(weight.shape[0], c)
    if is_channels_last(x):
        return F.linear(x.permute(0, 2, 3, 1), w2, bias).permute(0, 3, 1, 2)
    y = torch.matmul(w2, x.reshape(b, c, h * w))
    if bias is not None:
        y = y + bias.view(1, -1, 1)
    return y.view(b, -1, h, w)


def inference_conv(conv: nn.Conv2d, x: torch.Tensor, weight: Optional[torch.Tensor] = None,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv(x)``, or with ``weight``/``bias`` given (BN folded) the convolution with those.

    When no autograd graph is recorded, a 1x1 conv that :func:`pointwise_as_gemm` selects runs as one GEMM:
    oneDNN's convolution took up to 3x longer there (e.g. 12288->1024 on a 7x7 map: 21.6 ms vs 6.7 ms on 2
    threads), and these convs hold most of the time of EfficientViT-L3 at 224. Not while tracing: an ONNX graph
    keeps its Conv nodes."""
    own = weight is None
    if own:
        weight, bias = conv.weight, conv.bias
    if not torch.is_grad_enabled() and not cache_disabled() and pointwise_as_gemm(conv, x):
        return pointwise_gemm(x, weight, bias)
    return conv(x) if own else conv._conv_forward(x, weight, bias)


def conv_bn(conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))``; at inference one convolution with the BN folded in (identical up to rounding)."""
    if is_inference(bn):
        folded = folded_conv_bn(conv, bn)
        if folded is not None:
            return inference_conv(conv, x, folded[0], folded[1])
    return bn(conv(x))


_INPLACE_ACTS = {nn.Hardswish: F.hardswish, nn.ReLU: F.relu, nn.ReLU6: F.relu6, nn.SiLU: F.silu}


def apply_act(act: Optional[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``act(x)``; in place when no autograd graph is recorded (``x`` must be a fresh tensor)."""
    if act is None:
        return x
    inplace = _INPLACE_ACTS.get(type(act))
    if inplace is not None and not torch.is_grad_enabled():
        return inplace(x, inplace=True)
    return act(x)


class ConvNormAct(nn.Module):
    """``[dropout] -> conv -> [norm] -> [act]``, the one Conv+BN unit of every family.

    The child modules are stored under the names each official checkpoint uses (``names`` = names of the conv, the
    norm and the activation): EfficientViT-MIT ``conv``/``norm``/``act``, EfficientViT-MSRA ``c``/``bn``,
    EfficientFormer ``0``/``1``. A BatchNorm is folded into the convolution at inference (:func:`conv_bn`).
    """

    def __init__(self, conv: nn.Conv2d, norm: Optional[nn.Module] = None, act: Optional[nn.Module] = None,
                 dropout: float = 0.0, names: Tuple[str, str, str] = ("conv", "norm", "act")):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self._names = tuple(names)
        self.add_module(names[0], conv)
        self.add_module(names[1], norm)
        self.add_module(names[2], act)

    def forward(self, x):
        conv, norm, act = (getattr(self, n) for n in self._names)
        if self.dropout is not None:
            x = self.dropout(x)
        x = inference_conv(conv, x) if norm is None else conv_bn(conv, norm, x)
        return apply_act(act, x)


def use_channels_last(option, x: torch.Tensor, training: bool = False) -> bool:
    """Whether to run a conv-heavy network channels-last: ``None`` = for inference on the CPU, where oneDNN is much
    faster with it for these models (measured 1.2-2.5x on EfficientViT-MIT and EfficientFormer; not used where it
    did not help). Not by default in training (DDP's gradient buckets expect the parameters' own layout), nor while
    tracing (an ONNX graph is NCHW: the layout changes would become Transpose copies in every runtime)."""
    if option is None:
        return x.device.type == "cpu" and not training and not (torch.jit.is_tracing() or torch.jit.is_scripting())
    return bool(option)


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor stored channels-last (and not also plain contiguous, as 1x1 maps or 1-channel maps are)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def like_memory_format(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last layout if ``ref`` is channels-last (keeps a channels-last network channels-last)."""
    if is_channels_last(ref):
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


# ---------------------------------------------------------------------------------------------------------------
# Relative-position attention biases (EfficientViT-MSRA, EfficientFormer V1/V2)
# ---------------------------------------------------------------------------------------------------------------
logger = logging.getLogger("effvit_plugins")


def biased_attention(q, k, v, bias, scale: float) -> torch.Tensor:
    """``softmax(q @ k^T * scale + bias) @ v`` for (B, heads, N, dim) tensors and a (heads, Nq, Nk) bias.

    On CUDA the fused kernel is used; elsewhere plain matmuls, which are faster than the CPU fused path for
    these small maps (and are what the MAC counter sees on the meta device either way).
    """
    if q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    attn = torch.matmul(q * scale, k.transpose(-2, -1)) + bias
    return torch.matmul(attn.softmax(dim=-1), v)


class RelPosBias(nn.Module):
    """Mixin owning a learned bias per relative offset (LeViT style) and its index buffer.

    The table is a parameter of shape ``(heads, kh * kw)``, row-major over the absolute offsets ``(|dy|, |dx|)``
    of a ``kh x kw`` key grid (the order in which :func:`relative_bias_index` meets them). It is named
    ``attention_biases`` (the classification models) or ``attention_biases_seg`` (the official dense-prediction
    models, whose tables are built for a larger grid); the index buffer is ``attention_bias_idxs[_seg]``,
    recomputed at construction and therefore not stored in checkpoints.

    :meth:`attention_bias` returns the ``(heads, Nq, Nk)`` bias for the attention actually computed: the gathered
    table when ``(Nq, Nk)`` is the size it was built for, otherwise that map resized bicubically (the official
    dense-prediction rule). Outside training the result is cached (a few sizes, keyed by size/device/dtype and
    invalidated when the parameter is changed in place or replaced, e.g. by ``load_state_dict``).
    ``bias_tables`` tells :func:`resize_bias_tables_on_load` the grid of each table.
    """

    bias_cache_size: int = 2

    def _init_heads(self, num_heads: int, key_dim: int, attn_ratio: float) -> None:
        """Head geometry of the LeViT-style attentions: ``key_dim`` per head for q/k, ``d = attn_ratio * key_dim``
        per head for v (``dh`` in total)."""
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads

    def _init_bias(self, num_heads: int, q_size, k_size, q_stride: int = 1, seg: bool = False) -> None:
        self._grid = (tuple(q_size), tuple(k_size), int(q_stride))
        self.table_name = "attention_biases_seg" if seg else "attention_biases"
        num_offsets = int(k_size[0]) * int(k_size[1])
        self.register_parameter(self.table_name, nn.Parameter(torch.zeros(num_heads, num_offsets)))
        # the index is always computed for real (also when the model is built under a ``meta`` device context,
        # so that such a model only needs its state dict loaded with ``assign=True``)
        default_device = torch.get_default_device() if hasattr(torch, "get_default_device") else torch.device("cpu")
        self.register_buffer(self.table_name.replace("biases", "bias_idxs"),
                             self._bias_index_tensor(None if default_device.type == "meta" else default_device),
                             persistent=False)
        self.bias_tables = {self.table_name: (int(k_size[0]), int(k_size[1]))}
        self._bias_cache: Dict[tuple, tuple] = {}

    def _bias_index_tensor(self, device=None) -> torch.Tensor:
        q_size, k_size, q_stride = self._grid
        with torch.device("cpu"):
            num_offsets, idx = relative_bias_index(q_size, k_size, q_stride)
        if num_offsets != k_size[0] * k_size[1]:
            raise ValueError(f"relative bias: {num_offsets} offsets for a {k_size} key grid")
        return idx if device is None else idx.to(device)

    def init_non_persistent_buffers(self) -> None:
        """Recompute the index buffer (timm's name for this step), e.g. after ``to_empty()``."""
        name = self.table_name.replace("biases", "bias_idxs")
        setattr(self, name, self._bias_index_tensor(self.bias_table.device))
        self.clear_bias_cache()

    @property
    def bias_table(self) -> torch.Tensor:
        return getattr(self, self.table_name)

    @property
    def bias_index(self) -> torch.Tensor:
        return getattr(self, self.table_name.replace("biases", "bias_idxs"))

    def _expanded_bias(self, nq: int, nk: int) -> torch.Tensor:
        return resize_bias_map(self.bias_table[:, self.bias_index], (nq, nk))

    def attention_bias(self, nq: int, nk: int, dtype: torch.dtype) -> torch.Tensor:
        if self.training or cache_disabled():
            return self._expanded_bias(nq, nk).to(dtype)
        p = self.bias_table
        key = (nq, nk, p.device, dtype)
        hit = self._bias_cache.get(key)
        if hit is not None and hit[0] is p and hit[1] == p._version:
            return hit[2]
        with torch.inference_mode(False), torch.no_grad():
            bias = self._expanded_bias(nq, nk).to(dtype).contiguous()
        if key not in self._bias_cache and len(self._bias_cache) >= self.bias_cache_size:
            self._bias_cache.pop(next(iter(self._bias_cache)))
        self._bias_cache[key] = (p, p._version, bias)
        return bias

    def clear_bias_cache(self) -> None:
        self._bias_cache = {}

    def train(self, mode: bool = True):
        self.clear_bias_cache()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_bias_cache()
        return super()._apply(fn, *args, **kwargs)


class resize_bias_tables_on_load:  # noqa: N801  (used like a function: a picklable hook factory)
    """A ``load_state_dict`` pre-hook (register with ``with_module=True`` on a backbone) that resizes every
    attention-bias table of the incoming state dict whose grid differs from the receiving module's.

    Submodules declare their tables in ``bias_tables`` (``{param name: (rows, cols)}``); a table stored for a
    square ``r0 x r0`` offset grid is resized bicubically on that grid. This is the intended path for e.g. an
    ImageNet checkpoint (tables for 224x224 inputs) loaded into a dense-prediction backbone (tables for 7x7
    windows / the detection resolution). All resized tables are reported in ONE log line (logger
    ``effvit_plugins``, level INFO) saying what was resized from what to what.
    """

    def __init__(self, family: str):
        self.family = family

    def __call__(self, module, state_dict, prefix, *args, **kwargs):
        changes: Dict[Tuple[tuple, tuple], list] = {}
        for name, sub in module.named_modules():
            for pname, (rows, cols) in (getattr(sub, "bias_tables", None) or {}).items():
                key = f"{prefix}{name + '.' if name else ''}{pname}"
                t = state_dict.get(key)
                if not torch.is_tensor(t) or t.dim() != 2 or t.shape[1] == rows * cols:
                    continue
                r0 = math.isqrt(t.shape[1])
                if r0 * r0 != t.shape[1] or t.shape[0] != getattr(sub, pname).shape[0]:
                    continue  # not a square offset grid / other head count: the size check reports it
                grid = t.detach().float().reshape(t.shape[0], r0, r0)
                state_dict[key] = resize_bias_map(grid, (rows, cols)).reshape(t.shape[0], -1).to(t.dtype)
                changes.setdefault(((r0, r0), (rows, cols)), []).append(key[len(prefix):])
        if changes:
            parts = [f"{len(keys)} from {a[0]}x{a[1]} to {b[0]}x{b[1]} offsets ({', '.join(keys[:3])}"
                     f"{', ...' if len(keys) > 3 else ''})" for (a, b), keys in changes.items()]
            logger.info("%s: resized attention-bias tables bicubically on their offset grids: %s", self.family,
                        "; ".join(parts))


def stem_conv_bn_act(in_ch: int, out_ch: int, act_layer) -> nn.Sequential:
    """Two 3x3 stride-2 conv + BN + act layers (EfficientFormer V1/V2 stem; weights at indices 0/1/3/4)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch // 2, 3, stride=2, padding=1), nn.BatchNorm2d(out_ch // 2), act_layer(),
        nn.Conv2d(out_ch // 2, out_ch, 3, stride=2, padding=1), nn.BatchNorm2d(out_ch), act_layer(),
    )


def set_norm_eps(module: nn.Module, eps: float) -> None:
    """Set ``eps`` of every BatchNorm/LayerNorm/GroupNorm below ``module`` (the official L-series uses 1e-7)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    for m in module.modules():
        if isinstance(m, (_BatchNorm, nn.LayerNorm, nn.GroupNorm)):
            m.eps = eps
