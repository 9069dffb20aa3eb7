"""Building blocks used by more than one family (one implementation each)."""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
from typing import Callable, Dict, Optional, Tuple

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        return self._drop(x)

    @torch.jit.unused  # training only
    def _drop(self, x: torch.Tensor) -> torch.Tensor:
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
    if bias.shape[-2] == size[0] and bias.shape[-1] == size[1]:
        return bias
    return F.interpolate(bias.unsqueeze(0), size=[size[0], size[1]], mode=mode, align_corners=False).squeeze(0)


# ---------------------------------------------------------------------------------------------------------------
# Deploy-time graph rewrites: the hook points (the rewrites themselves live in effvit_plugins.deploy.rewrites)
# ---------------------------------------------------------------------------------------------------------------
_EXPORT_REWRITES: Dict[str, Callable] = {}


@contextlib.contextmanager
def export_rewrites(**rewrites: Callable):
    """While active, the blocks below that have a hook call ``rewrites[name]`` instead of their eager code when
    ``torch.onnx`` is tracing them; outside an export they run unchanged. Hooks: ``upsample(x, size, mode)``
    (may return None: not rewritten) and ``group_norm(module, x)``. The rewrites are deployment code
    (:mod:`effvit_plugins.deploy.rewrites` installs them for an export); the cores only read this table, so they
    never import the deploy package. Nests and restores."""
    before = dict(_EXPORT_REWRITES)
    _EXPORT_REWRITES.update(rewrites)
    try:
        yield
    finally:
        _EXPORT_REWRITES.clear()
        _EXPORT_REWRITES.update(before)


def exporting_onnx() -> bool:
    """``torch.onnx.is_in_onnx_export()``, callable from code that TorchScript compiles (there it raises: callers
    test ``torch.jit.is_scripting()`` first)."""
    return torch.onnx.is_in_onnx_export()


exporting_onnx.__annotations__ = {"return": bool}  # (evaluated: TorchScript reads the stub's signature)
exporting_onnx = torch.jit.unused(exporting_onnx)


def export_rewrite(name: str) -> Optional[Callable]:
    """The rewrite installed for ``name`` when an ONNX export is tracing the caller, else None."""
    if not _EXPORT_REWRITES or not torch.onnx.is_in_onnx_export():
        return None
    return _EXPORT_REWRITES.get(name)


def upsample(x: torch.Tensor, size, mode: str = "bicubic") -> torch.Tensor:
    """``F.interpolate(x, size, mode, align_corners=False)``; in an export the ``upsample`` rewrite may replace
    it (:func:`effvit_plugins.deploy.rewrites.fixed_size_upsample`: a convolution for integer factors)."""
    rewrite = export_rewrite("upsample")
    if rewrite is not None:
        y = rewrite(x, size, mode)
        if y is not None:
            return y
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)  # traced sizes stay symbolic


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters, same keys) with the ``group_norm`` export hook: in an ONNX export made
    by :mod:`effvit_plugins.deploy` its graph averages within each channel first
    (:func:`effvit_plugins.deploy.rewrites.group_norm_per_channel`, which says why). Eager PyTorch is unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return self._forward(x)

    @torch.jit.unused  # (the hook is for ONNX export, which traces)
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        rewrite = export_rewrite("group_norm")
        return super().forward(x) if rewrite is None else rewrite(self, x)


def autocast_off(x: torch.Tensor):
    """Context manager disabling autocast for ``x``'s device (meta tensors use the CPU autocast state)."""
    dev = x.device.type
    return torch.autocast(device_type="cpu" if dev == "meta" else dev, enabled=False)


# ---------------------------------------------------------------------------------------------------------------
# Inference-time caches (BN folding, expanded attention biases): one mechanism, inference_cached
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


class InferenceCache:
    """The one memo of tensors derived from a module's parameters/buffers for inference (folded Conv+BN weights,
    expanded attention biases), filled and read by :func:`inference_cached`: at most ``capacity`` entries, each
    stored with the identity/version/device/dtype stamp of its source tensors."""

    def __init__(self, capacity: int = 2):
        self.capacity = int(capacity)
        self.entries: Dict[tuple, tuple] = {}

    def clear(self) -> None:
        self.entries.clear()


def inference_cached(module: nn.Module, key: tuple, sources, compute: Callable[[], object]):
    """``compute()``, memoised under ``key`` in ``module``'s :class:`InferenceCache` (an attribute created on first
    use, not part of the state dict) and recomputed whenever one of the ``sources`` tensors is replaced, moved,
    cast or changed in place (``load_state_dict``, an optimizer step, ``.to()``).

    Memoised only when no autograd graph is recorded (a cached tensor carries no gradient) and not while tracing /
    scripting / compiling (derived tensors must then be part of the graph); otherwise, or when the sources have no
    version counter (inference tensors), this just computes. Entries are computed outside inference mode, so a
    tensor cached under ``torch.inference_mode`` is usable after it. Callers decide when a derived tensor may be
    reused at all (e.g. not in training mode)."""
    if torch.is_grad_enabled() or cache_disabled():
        return compute()
    stamp = tensor_stamp(*sources)
    if stamp is None:
        return compute()
    cache = module.__dict__.get("_inference_cache")
    if cache is None:
        cache = module.__dict__["_inference_cache"] = InferenceCache()
    hit = cache.entries.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    with torch.inference_mode(False), torch.no_grad():
        value = compute()
    if key not in cache.entries and len(cache.entries) >= cache.capacity:
        cache.entries.pop(next(iter(cache.entries)))
    cache.entries[key] = (stamp, value)
    return value


def clear_inference_cache(module: nn.Module) -> None:
    """Drop ``module``'s memoised tensors (:func:`inference_cached`)."""
    module.__dict__.pop("_inference_cache", None)


def is_inference(bn: nn.Module) -> bool:
    return not bn.training and not torch.is_grad_enabled()


def fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor], bn: nn.Module):
    """``(weight, bias)`` of one convolution equal to the convolution ``(weight, bias)`` followed by eval-mode
    BatchNorm ``bn`` (its running statistics; affine parameters optional). The one BN-folding formula: used at
    inference (:func:`folded_conv_bn`) and for export (:func:`effvit_plugins.deploy.folding.fold_batchnorm`)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.reshape((-1,) + (1,) * (weight.dim() - 1)), shift


def folded_conv_bn(conv: nn.Conv2d, bn: nn.Module):
    """:func:`fold_bn` of ``conv`` and ``bn``, memoised on ``conv`` at inference (:func:`inference_cached`).
    Returns ``None`` when folding is not possible (no running statistics) or not wanted (tracing / compiling: the
    graph keeps its BatchNorm, which an export folds on a copy of the model instead)."""
    stats = (getattr(bn, "running_mean", None), getattr(bn, "running_var", None))
    if any(not torch.is_tensor(t) for t in stats) or not hasattr(bn, "eps") or cache_disabled():
        return None
    sources = tuple(t for t in (conv.weight, conv.bias, bn.weight, bn.bias, *stats) if t is not None)
    return inference_cached(conv, ("bn_fold",), sources, lambda: fold_bn(conv.weight, conv.bias, bn))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.forward_plain(x)
        return self._forward(x)

    @torch.jit.unused  # (TorchScript runs forward_plain: same result, without the inference caches)
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, act = (getattr(self, n) for n in self._names)
        if self.dropout is not None:
            x = self.dropout(x)
        x = inference_conv(conv, x) if norm is None else conv_bn(conv, norm, x)
        return apply_act(act, x)

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        """``act(norm(conv(dropout(x))))`` as separate modules: what TorchScript compiles (a subclass whose
        children have other names than ``conv``/``norm``/``act`` overrides it)."""
        if self.dropout is not None:
            x = self.dropout(x)
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


def use_channels_last(option, x: torch.Tensor) -> bool:
    """Whether to run a conv-heavy network channels-last: ``None`` = on the CPU, where oneDNN is much faster with it
    for these models -- inference 1.2-2.5x on EfficientViT-MIT and EfficientFormer; one training step (forward,
    backward, AdamW) 1.1-1.3x (B1 at 512x1024 batch 2: 864 -> 660 ms, EfficientFormer-L1 at 224 batch 16:
    1070 -> 803 ms, M4: 250 -> 228 ms on 2 cores; ``tools/benchmark.py --suite train``). Only the activations change
    layout: parameters and their gradients keep theirs (autograd gives each gradient its parameter's strides, so
    DDP's buckets are unaffected). Not while tracing (an ONNX graph is NCHW: the layout changes would become
    Transpose copies in every runtime)."""
    if option is None:
        return x.device.type == "cpu" and not (torch.jit.is_tracing() or torch.jit.is_scripting())
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


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                    bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``softmax(q @ k^T * scale [+ bias]) @ v`` written with matmuls (what every exporter and opset can express)
    for (B, heads, N, dim) tensors and an optional (heads, Nq, Nk) bias."""
    attn = torch.matmul(q * scale, k.transpose(-2, -1))
    if bias is not None:
        attn = attn + bias
    return torch.matmul(attn.softmax(dim=-1), v)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, scale=scale)`` (fused kernels); while ``torch.onnx`` exports the
    caller, :func:`plain_attention` instead: the fused operator has no ONNX translation before opset 14 (and
    Detectron2 exports at opset 11). Eager results are unchanged."""
    if not torch.jit.is_scripting() and exporting_onnx():
        return plain_attention(q, k, v, scale)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def biased_attention(q, k, v, bias, scale: float) -> torch.Tensor:
    """``softmax(q @ k^T * scale + bias) @ v`` for (B, heads, N, dim) tensors and a (heads, Nq, Nk) bias.

    On CUDA the fused kernel is used (not in an ONNX export: see :func:`scaled_dot_product_attention`); elsewhere
    :func:`plain_attention`, which is faster than the CPU fused path for these small maps (and is what the MAC
    counter sees on the meta device either way).
    """
    if q.is_cuda and (torch.jit.is_scripting() or not exporting_onnx()):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    return plain_attention(q, k, v, scale, bias)


class RelPosBias(nn.Module):
    """Mixin owning a learned bias per relative offset (LeViT style) and its index buffer.

    The table is a parameter of shape ``(heads, kh * kw)``, row-major over the absolute offsets ``(|dy|, |dx|)``
    of a ``kh x kw`` key grid (the order in which :func:`relative_bias_index` meets them). It is named
    ``attention_biases`` (the classification models) or ``attention_biases_seg`` (the official dense-prediction
    models, whose tables are built for a larger grid); the index buffer is ``attention_bias_idxs[_seg]``,
    recomputed at construction and therefore not stored in checkpoints.

    :meth:`attention_bias` returns the ``(heads, Nq, Nk)`` bias for the attention actually computed: the gathered
    table when ``(Nq, Nk)`` is the size it was built for, otherwise that map resized bicubically (the official
    dense-prediction rule). At inference (eval mode, no autograd) the result is memoised
    (:func:`inference_cached`: the last two sizes/dtypes; recomputed when the table is changed or replaced).
    ``bias_tables`` tells :func:`resize_bias_tables_on_load` the grid of each table.
    """

    __jit_unused_properties__ = ["bias_table", "bias_index"]  # (dynamic names; TorchScript uses _script_bias)

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
        if torch.jit.is_scripting():
            return self._script_bias(nq, nk).to(dtype)
        return self._attention_bias(nq, nk, dtype)

    def _script_bias(self, nq: int, nk: int) -> torch.Tensor:
        # (TorchScript: attributes by literal name; resolved when the module is compiled)
        if hasattr(self, "attention_biases_seg"):
            return resize_bias_map(self.attention_biases_seg[:, self.attention_bias_idxs_seg], (nq, nk))
        return resize_bias_map(self.attention_biases[:, self.attention_bias_idxs], (nq, nk))

    @torch.jit.unused  # (TorchScript: _script_bias, the same tensor computed every time)
    def _attention_bias(self, nq: int, nk: int, dtype: torch.dtype) -> torch.Tensor:
        if self.training:
            return self._expanded_bias(nq, nk).to(dtype)
        return inference_cached(self, (nq, nk, dtype), (self.bias_table, self.bias_index),
                                lambda: self._expanded_bias(nq, nk).to(dtype))

    def clear_bias_cache(self) -> None:
        clear_inference_cache(self)


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


def distilled_logits(logits: torch.Tensor, dist_logits: torch.Tensor, training: bool):
    """The output of a classifier with a distillation head (DeiT, Touvron et al., arXiv 2012.12877, as the official
    EfficientFormer and EfficientViT-MSRA heads use it): both logits in training (the loss needs each), their mean
    at evaluation."""
    if training:
        return logits, dist_logits
    return (logits + dist_logits) / 2


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
