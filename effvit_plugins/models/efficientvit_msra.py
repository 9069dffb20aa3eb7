"""EfficientViT of Microsoft Research Asia (cascaded group attention), variants M0-M5.

Liu et al., "EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention", CVPR 2023
(arXiv 2305.07027). Official code: microsoft/Cream, folder ``EfficientViT`` (classification and mmdet-2.x
downstream models). This module is a framework-free re-implementation in plain PyTorch.

Structure (names follow the official checkpoints so that their keys load unchanged):

* ``patch_embed``: four 3x3 stride-2 ``ConvBN`` (indices 0, 2, 4, 6) with ReLU between them (stride 16).
* ``blocks1`` (stride 16), ``blocks2`` (stride 32), ``blocks3`` (stride 64). ``blocks2``/``blocks3`` start with
  the three downsampling entries of the official model (index 0: residual DW conv + residual FFN, index 1:
  ``PatchMerging``, index 2: residual DW conv + residual FFN) followed by the ``EfficientViTBlock`` s.
* Every ``EfficientViTBlock`` is the "sandwich" ``dw0 -> ffn0 -> mixer -> dw1 -> ffn1``, each a residual
  branch whose module is stored as ``.m`` (so keys read ``blocks1.0.mixer.m.attn.qkvs.0.c.weight``).
* The classifier head (``head.bn`` / ``head.l``, optional ``head_dist``) averages the last map globally.

Windows and input sizes
-----------------------
Every attention layer owns a learned relative-position bias table ``attention_biases`` of shape
``(num_heads, r * r)`` for a square window of side ``r``, indexed by the absolute offset ``(|dy|, |dx|)``
(flat index ``|dy| * r + |dx|``; this is exactly the order in which the official LeViT-style enumeration meets the
offsets, so ``attention_bias_idxs`` of the official checkpoints equals ``table[|dy| * r + |dx|]``).

``r`` is the window size of the stage (7), except when the model is built with ``img_size`` (as the official
ImageNet classifier is, for 224 x 224): then ``r = min(7, stage resolution)`` per stage, i.e. 7/7/4 at 224, so
that the ImageNet checkpoints (stage-3 table 4 x 16) load exactly and the model equals the official/timm one.

At run time a map of ``H x W`` is handled as follows (see :class:`LocalWindowAttention`):

* ``H <= r and W <= r``: the whole map is one window. Its bias is gathered from the learned table for the
  offsets that actually occur (all offsets are ``< r``), which is the same relative-position function the model
  learned, restricted to a smaller window. With ``H == W == r`` this is the official computation. The official
  downstream code instead uses the full ``r x r`` bias and crashes for e.g. a 4x4 map (224 input).
* otherwise: the official partition into ``r x r`` windows, the map zero-padded at the bottom/right to a multiple
  of ``r`` (padded tokens take part in attention, as in the official code; keeping this behaviour keeps released
  detection weights exact). All windows of the batch are processed as one batch (no Python loop over windows).

Loading a checkpoint whose table was built for another window (e.g. an ImageNet checkpoint, stage-3 table 4 x 4,
into the dense-prediction backbone, whose tables are 7 x 7) resizes the table bicubically on its offset grid,
as the official downstream code does when it loads ImageNet weights; ``attention_bias_idxs`` is always
regenerated for the receiving model (it is derived data).
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import BackboneBase, resolve_arch
from .spec import FamilySpec, Paper, Recipe, register_family
from .layers import (ConvNormAct, DropPath, distilled_logits, drop_path_rates, inference_cached,
                     relative_bias_index, resize_bias_tables_on_load)

__all__ = [
    "ARCH_SETTINGS", "OFFICIAL_KEY_SIGNATURE", "EfficientViTMSRABackbone", "EfficientViTMSRAClsHead",
    "EfficientViTMSRAClassifier", "convert_official_checkpoint",
]

FAMILY = "EfficientViT-MSRA"

# Variant table of the official classification models (build.py). key_dim is 16 everywhere.
ARCH_SETTINGS: Dict[str, dict] = {
    "m0": dict(embed_dims=(64, 128, 192), depths=(1, 2, 3), num_heads=(4, 4, 4), window_sizes=(7, 7, 7),
               kernels=(5, 5, 5, 5), key_dims=(16, 16, 16)),
    "m1": dict(embed_dims=(128, 144, 192), depths=(1, 2, 3), num_heads=(2, 3, 3), window_sizes=(7, 7, 7),
               kernels=(7, 5, 3, 3), key_dims=(16, 16, 16)),
    "m2": dict(embed_dims=(128, 192, 224), depths=(1, 2, 3), num_heads=(4, 3, 2), window_sizes=(7, 7, 7),
               kernels=(7, 5, 3, 3), key_dims=(16, 16, 16)),
    "m3": dict(embed_dims=(128, 240, 320), depths=(1, 2, 3), num_heads=(4, 3, 4), window_sizes=(7, 7, 7),
               kernels=(5, 5, 5, 5), key_dims=(16, 16, 16)),
    "m4": dict(embed_dims=(128, 256, 384), depths=(1, 2, 3), num_heads=(4, 4, 4), window_sizes=(7, 7, 7),
               kernels=(7, 5, 3, 3), key_dims=(16, 16, 16)),
    "m5": dict(embed_dims=(192, 288, 384), depths=(1, 3, 4), num_heads=(3, 3, 4), window_sizes=(7, 7, 7),
               kernels=(7, 5, 3, 3), key_dims=(16, 16, 16)),
}

# Key fragments found only in official MSRA EfficientViT checkpoints (cascaded-group-attention layout).
OFFICIAL_KEY_SIGNATURE = ("mixer.m.attn.qkvs.", "mixer.m.attn.dws.", "patch_embed.6.c.weight")

PATCH_STRIDE = 16


# ----------------------------------------------------------------------------------------------------------------
# Basic layers
# ----------------------------------------------------------------------------------------------------------------
class ConvBN(ConvNormAct):
    """Bias-free ``Conv2d`` (``c``) followed by ``BatchNorm2d`` (``bn``) whose weight starts at ``bn_weight_init``;
    folded into one convolution at inference (:class:`~effvit_plugins.models.layers.ConvNormAct`)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0):
        super().__init__(nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False),
                         nn.BatchNorm2d(out_ch), names=("c", "bn", "act"))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))


class Residual(nn.Module):
    """``x + drop_path(m(x))``; the wrapped module is kept as ``m`` (official key layout)."""

    def __init__(self, m: nn.Module, drop_prob: float = 0.0):
        super().__init__()
        self.m = m
        self.drop_path = DropPath(drop_prob) if drop_prob > 0 else nn.Identity()

    def forward(self, x):
        return x + self.drop_path(self.m(x))


class FFN(nn.Module):
    """Pointwise expansion (x2), ReLU, pointwise projection (BN weight initialised to 0)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = ConvBN(dim, hidden)
        self.act = nn.ReLU(inplace=True)
        self.pw2 = ConvBN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x):
        return self.pw2(self.act(self.pw1(x)))


def _round_channels(v: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), as used for the squeeze-excite width."""
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with 1x1 convs ``fc1``/``fc2`` (with bias), ReLU and a sigmoid gate."""

    def __init__(self, channels: int, rd_ratio: float = 0.25):
        super().__init__()
        rd = _round_channels(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x):
        s = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class PatchMerging(nn.Module):
    """Stride-2 downsampling: 1x1 to 4C, ReLU, DW 3x3 stride 2, ReLU, SE(0.25), 1x1 to the next width."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        hidden = dim * 4
        self.conv1 = ConvBN(dim, hidden)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = ConvBN(hidden, hidden, 3, 2, 1, groups=hidden)
        self.se = SqueezeExcite(hidden, 0.25)
        self.conv3 = ConvBN(hidden, out_dim)

    def forward(self, x):
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(self.se(x))


# ----------------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------------
class CascadedGroupAttention(nn.Module):
    """Cascaded group attention over one window (or one whole small map) per batch element.

    The input channels are split into ``num_heads`` chunks; head ``i`` sees its chunk plus the output of head
    ``i - 1``. Per head: 1x1 ``ConvBN`` to (q, k, v) with ``key_dim``/``key_dim``/``dim // num_heads`` channels,
    a depthwise ``ConvBN`` (kernel ``kernels[i]``) on q, softmax attention with a relative-position bias, and the
    concatenated head outputs go through ReLU and a 1x1 ``ConvBN`` projection (``proj.1``).

    The bias table ``attention_biases`` (heads x ``resolution**2``) is indexed by ``|dy| * resolution + |dx|``;
    ``attention_bias_idxs`` (a persistent buffer, as in the official checkpoints) holds that index for the full
    ``resolution x resolution`` window. Windows of ``h x w`` with ``h, w <= resolution`` gather their bias from
    the same table (see the module docstring).
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int,
                 kernels: Sequence[int]):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{FAMILY}: embed dim {dim} is not divisible by num_heads {num_heads}.")
        if len(kernels) < num_heads:
            raise ValueError(f"{FAMILY}: need one query DW kernel per head ({num_heads}), got {list(kernels)}.")
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.d = int(attn_ratio * key_dim)
        self.resolution = int(resolution)
        self._split = [key_dim, key_dim, self.d]
        self.qkvs = nn.ModuleList(ConvBN(dim // num_heads, 2 * key_dim + self.d) for _ in range(num_heads))
        self.dws = nn.ModuleList(ConvBN(key_dim, key_dim, kernels[i], 1, kernels[i] // 2, groups=key_dim)
                                 for i in range(num_heads))
        self.proj = nn.Sequential(nn.ReLU(inplace=True), ConvBN(self.d * num_heads, dim, bn_weight_init=0.0))
        r = self.resolution
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, r * r))
        self.register_buffer("attention_bias_idxs", self._full_window_index(r))
        self.bias_tables = {"attention_biases": (r, r)}
        self._index_cache: Dict[tuple, torch.Tensor] = {}

    # -- relative-position bias ------------------------------------------------------------------------------
    @staticmethod
    def _full_window_index(r: int) -> torch.Tensor:
        num, idx = relative_bias_index((r, r), (r, r))
        assert num == r * r
        return idx

    def _window_index(self, h: int, w: int, device) -> torch.Tensor:
        """Flat table index (h*w, h*w) for an ``h x w`` window, ``h, w <= resolution`` (cached per size/device)."""
        key = (h, w, str(device))
        idx = self._index_cache.get(key)
        if idx is None:
            if h > self.resolution or w > self.resolution:
                raise ValueError(f"{FAMILY}: a {h}x{w} window exceeds the {self.resolution}x{self.resolution} bias "
                                 f"table; partition the map with LocalWindowAttention.")
            # relative_bias_index numbers the offsets of an h x w grid as |dy| * w + |dx|; map to the r x r table.
            _, local = relative_bias_index((h, w), (h, w))
            idx = ((local // w) * self.resolution + local % w).to(device)
            self._index_cache[key] = idx
        return idx

    def _gather_bias(self, h: int, w: int) -> torch.Tensor:
        table = self.attention_biases
        if h == self.resolution and w == self.resolution:
            idx = self.attention_bias_idxs
        else:
            idx = self._window_index(h, w, table.device)
        return table[:, idx]

    def attention_bias(self, h: int, w: int) -> torch.Tensor:
        """(heads, h*w, h*w) bias; memoised at inference (:func:`~effvit_plugins.models.layers.inference_cached`,
        recomputed when the table changes)."""
        if torch.jit.is_scripting():
            return self._script_bias(h, w)
        return self._cached_bias(h, w)

    def _script_bias(self, h: int, w: int) -> torch.Tensor:
        """The bias computed in TorchScript: the index of an ``h x w`` window written out (``|dy| * r + |dx|``, what
        :meth:`_window_index` gathers), no caches."""
        if h == self.resolution and w == self.resolution:
            return self.attention_biases[:, self.attention_bias_idxs]
        if h > self.resolution or w > self.resolution:
            raise ValueError("EfficientViT-MSRA: a window exceeds the bias table; partition the map with "
                             "LocalWindowAttention.")
        dev = self.attention_biases.device
        ys = torch.arange(h, device=dev).repeat_interleave(w)
        xs = torch.arange(w, device=dev).repeat(h)
        idx = (ys[:, None] - ys[None, :]).abs() * self.resolution + (xs[:, None] - xs[None, :]).abs()
        return self.attention_biases[:, idx]

    @torch.jit.unused  # (TorchScript: _script_bias)
    def _cached_bias(self, h: int, w: int) -> torch.Tensor:
        if self.training:
            return self._gather_bias(h, w)
        return inference_cached(self, (h, w), (self.attention_biases, self.attention_bias_idxs),
                                lambda: self._gather_bias(h, w))

    def init_non_persistent_buffers(self) -> None:
        """Recompute the (derived) index buffer, e.g. after ``to_empty()`` (timm's name for this step)."""
        self.attention_bias_idxs = self._full_window_index(self.resolution).to(self.attention_biases.device)
        self._index_cache = {}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # the index buffer is derived from the table size: always use the receiving model's own (tables of another
        # size were resized by the backbone's resize_bias_tables_on_load hook before this runs)
        if prefix + "attention_biases" in state_dict:
            state_dict[prefix + "attention_bias_idxs"] = self.attention_bias_idxs.detach().clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _apply(self, fn, *args, **kwargs):
        self._index_cache = {}
        return super()._apply(fn, *args, **kwargs)

    # -- forward -----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W = x.shape[0], x.shape[2], x.shape[3]
        bias = self.attention_bias(H, W)
        chunks = x.chunk(self.num_heads, dim=1)
        outs: List[torch.Tensor] = []
        feat = chunks[0]
        for i, (qkv_conv, dw) in enumerate(zip(self.qkvs, self.dws)):  # (modules iterated: TorchScript)
            if i > 0:
                feat = feat + chunks[i]
            qkv = qkv_conv(feat).split(self._split, dim=1)
            q, k, v = dw(qkv[0]), qkv[1], qkv[2]
            # (B, N, kd) @ (B, kd, N) * scale + bias -> softmax over keys
            attn = torch.baddbmm(bias[i], q.flatten(2).transpose(1, 2), k.flatten(2), alpha=self.scale)
            attn = attn.softmax(dim=-1)
            feat = torch.bmm(v.flatten(2), attn.transpose(1, 2)).view(B, self.d, H, W)
            outs.append(feat)
        return self.proj(torch.cat(outs, dim=1))


class LocalWindowAttention(nn.Module):
    """Window partition around :class:`CascadedGroupAttention` that works for any map size.

    ``window_size`` is the side ``r`` of the attention's bias table. Maps with ``H <= r`` and ``W <= r`` are
    attended as a single window (bias gathered from the table for the real ``H x W`` offsets); larger maps are
    zero-padded at the bottom/right to multiples of ``r`` and split into ``r x r`` windows that are batched
    together, as in the official implementation.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, window_size: int,
                 kernels: Sequence[int]):
        super().__init__()
        self.window_size = int(window_size)
        self.attn = CascadedGroupAttention(dim, key_dim, num_heads, attn_ratio, self.window_size, kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        r = self.window_size
        if H <= r and W <= r:
            return self.attn(x)
        pad_b, pad_r = (-H) % r, (-W) % r
        if pad_b > 0 or pad_r > 0:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        nh, nw = Hp // r, Wp // r
        x = x.view(B, C, nh, r, nw, r).permute(0, 2, 4, 1, 3, 5).reshape(B * nh * nw, C, r, r)
        x = self.attn(x)
        x = x.view(B, nh, nw, C, r, r).permute(0, 3, 1, 4, 2, 5).reshape(B, C, Hp, Wp)
        if pad_b > 0 or pad_r > 0:
            x = x[:, :, :H, :W]
        return x


class EfficientViTBlock(nn.Module):
    """Sandwich block: residual DW 3x3, residual FFN, residual window attention, residual DW 3x3, residual FFN."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, window_size: int,
                 kernels: Sequence[int], drop_path: float = 0.0):
        super().__init__()
        self.dw0 = Residual(ConvBN(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0), drop_path)
        self.ffn0 = Residual(FFN(dim, dim * 2), drop_path)
        self.mixer = Residual(LocalWindowAttention(dim, key_dim, num_heads, attn_ratio, window_size, kernels),
                              drop_path)
        self.dw1 = Residual(ConvBN(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0), drop_path)
        self.ffn1 = Residual(FFN(dim, dim * 2), drop_path)

    def forward(self, x):
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


def _dw_ffn_pair(dim: int, drop_path: float) -> nn.Sequential:
    """Residual DW 3x3 + residual FFN placed before and after each PatchMerging (official downsample)."""
    return nn.Sequential(Residual(ConvBN(dim, dim, 3, 1, 1, groups=dim), drop_path),
                         Residual(FFN(dim, dim * 2), drop_path))


def _to_pair(size) -> Tuple[int, int]:
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[-1])
    return int(size), int(size)


def stage_window_sizes(window_sizes: Sequence[int], img_size=None) -> List[int]:
    """Side of each stage's bias table: ``window_sizes`` or, given ``img_size``, ``min(window, stage resolution)``.

    The stage resolutions follow the official classifier: ``min(img_size) // 16`` for stage 1, then
    ``(res - 1) // 2 + 1`` per downsampling (224 -> 14, 7, 4, hence tables 7, 7, 4).
    """
    if img_size is None:
        return [int(w) for w in window_sizes]
    res = min(_to_pair(img_size)) // PATCH_STRIDE
    if res < 1:
        raise ValueError(f"{FAMILY}: img_size {img_size} is smaller than the patch stride {PATCH_STRIDE}.")
    out = []
    for i, w in enumerate(window_sizes):
        if i > 0:
            res = (res - 1) // 2 + 1
        out.append(min(int(w), res))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Backbone / head / classifier
# ----------------------------------------------------------------------------------------------------------------
class EfficientViTMSRABackbone(BackboneBase):
    """EfficientViT-M0..M5 backbone returning the stage maps at strides 16, 32 and 64 (channels = embed dims).

    Args:
        arch: ``'m0'`` .. ``'m5'`` (case-insensitive) or a dict with the keys of :data:`ARCH_SETTINGS` entries.
            Required.
        in_channels: image channels.
        out_indices: stages to return (0: stride 16, 1: stride 32, 2: stride 64).
        frozen_stages: -1 nothing, 0 the stem (``patch_embed``), k the stem and ``blocks1..blocksk``.
        norm_eval: keep every BatchNorm in eval mode during training (statistics fixed; the official detectors
            always do this).
        drop_path_rate: stochastic depth, linearly increased over the attention blocks; every residual branch of
            a block uses the block's rate, the downsampling residuals of a stage use the rate of its first block.
            0 reproduces the official model.
        img_size: ``None`` (default, dense prediction; official downstream model): 7x7 bias tables everywhere.
            An image size (e.g. 224) builds the tables as the official classifier does for that size
            (``min(7, stage resolution)``), which is what ImageNet checkpoints contain. Either way any input size
            works; checkpoints of the other kind load with the bias tables resized (one log line says which).
        channels_last: run channels-last (outputs are returned contiguous NCHW); ``None`` = on the CPU (inference
            and training), where it is faster (M4 on 2 threads: 1.11x / 1.16x timm's speed at 224 / 512, NCHW 1.06x / 1.05x).
        with_cp: gradient checkpointing (OpenMMLab's name; the same switch as ``set_grad_checkpointing``): every
            block (and stem / downsampling layer) is recomputed in the backward pass instead of keeping its
            activations -- much less activation memory at large inputs, about one more forward of compute.
            Active only while training with autograd. Default False.
    """

    FAMILY = FAMILY

    def __init__(self, arch: Union[str, dict, None] = None, in_channels: int = 3, out_indices=(0, 1, 2),
                 frozen_stages: int = -1, norm_eval: bool = False, drop_path_rate: float = 0.0,
                 img_size: Optional[Union[int, Tuple[int, int]]] = None, channels_last: Optional[bool] = None,
                 with_cp: bool = False):
        super().__init__()
        self.channels_last = channels_last
        cfg = resolve_arch(arch, ARCH_SETTINGS, FAMILY)
        embed_dims = list(cfg["embed_dims"])
        depths = list(cfg["depths"])
        num_heads = list(cfg["num_heads"])
        kernels = list(cfg["kernels"])
        key_dims = list(cfg["key_dims"])
        windows = stage_window_sizes(cfg["window_sizes"], img_size)
        if not len(embed_dims) == len(depths) == len(num_heads) == len(key_dims) == len(windows) == 3:
            raise ValueError(f"{FAMILY}: a custom arch needs 3 stages (embed_dims, depths, num_heads, key_dims, "
                             f"window_sizes of length 3), got {cfg}.")

        self.arch = arch if isinstance(arch, str) else "custom"
        self.img_size = img_size
        self.window_sizes = windows
        self.drop_path_rate = float(drop_path_rate)

        c0 = embed_dims[0]
        self.patch_embed = nn.Sequential(
            ConvBN(in_channels, c0 // 8, 3, 2, 1), nn.ReLU(inplace=True),
            ConvBN(c0 // 8, c0 // 4, 3, 2, 1), nn.ReLU(inplace=True),
            ConvBN(c0 // 4, c0 // 2, 3, 2, 1), nn.ReLU(inplace=True),
            ConvBN(c0 // 2, c0, 3, 2, 1),
        )
        dpr = drop_path_rates(self.drop_path_rate, depths)
        for i in range(3):
            dim = embed_dims[i]
            attn_ratio = dim / (key_dims[i] * num_heads[i])
            layers: List[nn.Module] = []
            if i > 0:
                first = dpr[i][0] if dpr[i] else 0.0
                layers += [_dw_ffn_pair(embed_dims[i - 1], first), PatchMerging(embed_dims[i - 1], dim),
                           _dw_ffn_pair(dim, first)]
            layers += [EfficientViTBlock(dim, key_dims[i], num_heads[i], attn_ratio, windows[i], kernels, p)
                       for p in dpr[i]]
            self.add_module(f"blocks{i + 1}", nn.Sequential(*layers))
        self._register_load_state_dict_pre_hook(resize_bias_tables_on_load(FAMILY), with_module=True)
        self.init_contract(embed_dims, [16, 32, 64], ["blocks1", "blocks2", "blocks3"], in_channels, out_indices,
                           frozen_stages, norm_eval, with_cp)

    def stem_modules(self) -> List[nn.Module]:
        return [self.patch_embed]

    def stage_modules(self) -> List[nn.Module]:
        return [self.blocks1, self.blocks2, self.blocks3]

    def feature_steps(self):
        return [[self.patch_embed, *self.blocks1], list(self.blocks2), list(self.blocks3)]

    def script_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.blocks1(self.patch_embed(x))
        y = self.blocks2(x)
        return [x, y, self.blocks3(y)]


class BNLinear(nn.Sequential):
    """``BatchNorm1d`` (``bn``) + ``Linear`` (``l``), the official classifier layer."""

    def __init__(self, in_features: int, out_features: int, std: float = 0.02):
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(in_features))
        self.add_module("l", nn.Linear(in_features, out_features))
        nn.init.trunc_normal_(self.l.weight, std=std)
        nn.init.zeros_(self.l.bias)


class EfficientViTMSRAClsHead(nn.Module):
    """Global average pool of the last map, then ``bn`` + ``l`` (and ``head_dist`` when ``distillation``).

    With distillation the two logits are returned as a tuple in training and averaged in eval, as officially.
    ``num_classes=0`` returns the pooled features.
    """

    def __init__(self, in_channels: int, num_classes: int = 1000, distillation: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.distillation = distillation
        if num_classes > 0:
            self.bn = nn.BatchNorm1d(in_channels)
            self.l = nn.Linear(in_channels, num_classes)
            nn.init.trunc_normal_(self.l.weight, std=0.02)
            nn.init.zeros_(self.l.bias)
            if distillation:
                self.head_dist = BNLinear(in_channels, num_classes)

    def forward(self, feats):
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        x = x.mean((2, 3))
        if self.num_classes <= 0:
            return x
        out = self.l(self.bn(x))
        if self.distillation:
            return distilled_logits(out, self.head_dist(x), self.training)
        return out


class EfficientViTMSRAClassifier(nn.Module):
    """The official ImageNet model: backbone built for ``img_size`` (224) + classification head."""

    # official checkpoint names of our keys (our prefix -> theirs; convert_official_checkpoint is the inverse)
    official_key_prefixes = (("backbone.", ""), ("head.head_dist.", "head_dist."))

    def __init__(self, arch: Union[str, dict, None] = None, num_classes: int = 1000, in_channels: int = 3,
                 img_size: Optional[Union[int, Tuple[int, int]]] = 224, drop_path_rate: float = 0.0,
                 distillation: bool = False):
        super().__init__()
        self.backbone = EfficientViTMSRABackbone(arch, in_channels=in_channels, out_indices=(2,),
                                                 drop_path_rate=drop_path_rate, img_size=img_size)
        self.head = EfficientViTMSRAClsHead(self.backbone.stage_channels[-1], num_classes, distillation)

    def forward(self, x):
        return self.head(self.backbone(x))


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------
def _is_conv_weight_stored_2d(key: str, v: torch.Tensor) -> bool:
    """Every 2-D ``*weight`` outside the linear classifier layers is a 1x1 conv weight saved without (1, 1)."""
    return v.dim() == 2 and key.endswith("weight") and not key.startswith(("head.", "head_dist."))


def convert_official_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official (microsoft/Cream) EfficientViT-M checkpoint (unwrapped) -> our layouts.

    * ImageNet checkpoints -> :class:`EfficientViTMSRAClassifier`: backbone keys get ``backbone.``, ``head.*``
      stays, ``head_dist.*`` becomes ``head.head_dist.*``;
    * official detectors (mmdet 2.x; keys ``backbone.*``, ``neck.*``, ``bbox_head.*`` / ``rpn_head.*``,
      ``roi_head.*``): keys are kept (mmdet 3 uses the same names);

    and in both: 1x1 conv weights stored 2-D (out, in) are reshaped to (out, in, 1, 1), as the official loader does;
    ``attention_bias_idxs`` is regenerated from the size of each ``attention_biases`` table (added when the
    checkpoint lacks it, e.g. after a round trip through timm).
    """
    dense = any(k.startswith("backbone.") for k in state_dict)
    out: Dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k.endswith(("total_ops", "total_params", "attention_bias_idxs")):  # profiler counters; derived data
            continue
        bk = k[len("backbone."):] if dense and k.startswith("backbone.") else (None if dense else k)
        if bk is None:  # neck / heads of an official detector
            out[k] = v
            continue
        if _is_conv_weight_stored_2d(bk, v):
            v = v[:, :, None, None]
        if dense or not bk.startswith(("head.", "head_dist.")):
            out["backbone." + bk] = v
        else:
            out[("head." + bk) if bk.startswith("head_dist.") else bk] = v
    for k in [k for k in out if k.endswith(".attention_biases")]:
        length = out[k].shape[-1]
        r = math.isqrt(length)
        if r * r != length:
            raise ValueError(f"{FAMILY}: {k} has {length} offsets, not a square window; not an official table.")
        out[k[: -len("attention_biases")] + "attention_bias_idxs"] = CascadedGroupAttention._full_window_index(r)
    return out


SPEC = register_family(FamilySpec(
    key="efficientvit_msra", title="EfficientViT (MSRA)", name="EfficientViTMSRA",
    config_folder="efficientvit_msra", config_prefix="efficientvit-msra",
    backbone=EfficientViTMSRABackbone, cls_head=EfficientViTMSRAClsHead, classifier=EfficientViTMSRAClassifier,
    arch_settings=ARCH_SETTINGS, feature_strides=(16, 32, 64), upsample_neck=True,
    convert=convert_official_checkpoint, key_signature=OFFICIAL_KEY_SIGNATURE,
    imagenet_weights="efficientvit_{v}.pth",
    # the official classification README's model links (microsoft/Cream EfficientViT/classification/README.md)
    weights_url=("https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/download/v1.0/"
                 "efficientvit_{v}.pth"),
    dense_norm_eval=True, det_variant="m4",
    # the official detection recipes (microsoft/Cream EfficientViT/downstream/configs/, for M4)
    official_recipes={
        task: Recipe(source=f"microsoft/Cream EfficientViT/downstream/configs/{name}_efficientvit_{{v}}_fpn_1x_coco.py",
                     variants=("m4",), lr=1e-4, weight_decay=0.05, no_decay=("attention_biases",), warmup_iters=500,
                     warmup_factor=0.001)
        for task, name in (("retinanet", "retinanet"), ("mask-rcnn", "mask_rcnn"))},
    cls_backbone_kwargs=dict(img_size=224), cls_crop_pct=0.875,
    paper=Paper(authors="Liu et al.", venue="CVPR 2023", arxiv="2305.07027",
                title="EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention",
                code="microsoft/Cream"),
    architecture=("Cascaded Group Attention", "Sandwich Layout", "Depthwise Convolution"),
))
