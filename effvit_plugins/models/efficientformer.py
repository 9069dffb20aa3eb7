"""EfficientFormer (Snap Research) V1 (L1/L3/L7) and V2 (S0/S1/S2/L) in plain PyTorch.

Module and parameter names follow the official repository (``snap-research/EfficientFormer``,
``models/efficientformer.py`` and ``models/efficientformer_v2.py``): ``patch_embed.{0,1,3,4}`` for the stem,
``network.{0..6}`` for the four stages (even indices) and the three downsampling layers between them (odd
indices), and ``norm`` / ``head`` / ``dist_head`` for the classifier. An official ImageNet checkpoint therefore
only needs its classifier keys moved under ``head.`` (see :func:`convert_official_checkpoint`).

Differences from the official classification code, all needed for dense prediction:

* every stage output is returned as an NCHW map (V1's last stage works on tokens internally);
* V1 puts ``GroupNorm(1, C)`` on each returned map (``out_norm``), named ``norm0/norm2/norm4/norm6`` as in the
  official detection/segmentation backbones;
* the attention biases are learned for a 224x224 input. At that size the exact table is used; at any other
  size the expanded ``(heads, Nq, Nk)`` bias map is resized bicubically to the actual attention size, as the
  official dense-prediction code does. In eval mode the expanded/resized bias is cached per input size;
* V2 accepts sizes that are not multiples of 32: all strided layers round up, and the output of the stride-2
  attention is upsampled x2 and cropped back to its input size.
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import BackboneBase, check_in_channels, normalize_out_indices, resolve_arch
from .layers import (DropPath, LinearMlp, cache_disabled, conv_with_folded_bn, drop_path_rates, relative_bias_index,
                     resize_bias_map, use_channels_last)

__all__ = [
    "ARCH_SETTINGS",
    "OFFICIAL_KEY_SIGNATURE",
    "EfficientFormerBackbone",
    "EfficientFormerClsHead",
    "EfficientFormerClassifier",
    "convert_official_checkpoint",
    "infer_arch",
]

_FAMILY = "EfficientFormer"

# version 1: PoolFormer-style 4D blocks + ``vit_num`` token-attention blocks at the end of the last stage.
# version 2: FFN blocks with depth-wise mid conv + ``vit_num`` 4D-attention blocks at the end of stages 3 and 4,
#            per-block MLP expansion ratios, attention-based downsampling into stage 4.
ARCH_SETTINGS: Dict[str, dict] = {
    "l1": dict(version=1, embed_dims=(48, 96, 224, 448), depths=(3, 2, 6, 4), vit_num=1),
    "l3": dict(version=1, embed_dims=(64, 128, 320, 512), depths=(4, 4, 12, 6), vit_num=4),
    "l7": dict(version=1, embed_dims=(96, 192, 384, 768), depths=(6, 6, 18, 8), vit_num=8),
    "s0": dict(version=2, embed_dims=(32, 48, 96, 176), depths=(2, 2, 6, 4), vit_num=2,
               mlp_ratios=((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4))),
    "s1": dict(version=2, embed_dims=(32, 48, 120, 224), depths=(3, 3, 9, 6), vit_num=2,
               mlp_ratios=((4, 4, 4), (4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4))),
    "s2": dict(version=2, embed_dims=(32, 64, 144, 288), depths=(4, 4, 12, 8), vit_num=4,
               mlp_ratios=((4, 4, 4, 4), (4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                           (4, 4, 3, 3, 3, 3, 4, 4))),
    "l": dict(version=2, embed_dims=(40, 80, 192, 384), depths=(5, 5, 15, 10), vit_num=6,
              mlp_ratios=((4, 4, 4, 4, 4), (4, 4, 4, 4, 4), (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                          (4, 4, 4, 3, 3, 3, 3, 4, 4, 4))),
}

# Stochastic depth used by the official ImageNet recipes (informative; the backbone default is 0).
OFFICIAL_DROP_PATH = {"l1": 0.0, "l3": 0.0, "l7": 0.0, "s0": 0.0, "s1": 0.0, "s2": 0.02, "l": 0.1}

# Key fragments found in official EfficientFormer V1/V2 checkpoints (and in no other supported family).
OFFICIAL_KEY_SIGNATURE = ("network.0.0.mlp.fc1.weight", "network.1.proj.weight", "layer_scale_2")

_HEAD_KEYS = ("norm", "head", "dist_head")


class _ConvBN(nn.Sequential):
    """``Conv2d`` (index 0) + ``BatchNorm2d`` (index 1); the BN is folded into the conv at inference."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups),
                         nn.BatchNorm2d(out_ch))

    def forward(self, x):
        return conv_with_folded_bn(self, self[0], self[1], x)


def _stem(in_ch: int, out_ch: int, act_layer) -> nn.Sequential:
    # indices 0/1/3/4 carry weights (2 and 5 are activations), as in the official checkpoints
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch // 2, 3, stride=2, padding=1), nn.BatchNorm2d(out_ch // 2), act_layer(),
        nn.Conv2d(out_ch // 2, out_ch, 3, stride=2, padding=1), nn.BatchNorm2d(out_ch), act_layer(),
    )


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


def _biased_attention(q, k, v, bias, scale: float) -> torch.Tensor:
    """``softmax(q @ k^T * scale + bias) @ v`` for (B, heads, N, dim) tensors and a (heads, Nq, Nk) bias.

    On CUDA the fused kernel is used; elsewhere plain matmuls, which are faster than the CPU fused path for
    these small maps (and are what the MAC counter sees on the meta device either way).
    """
    if q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    attn = torch.matmul(q * scale, k.transpose(-2, -1)) + bias
    return torch.matmul(attn.softmax(dim=-1), v)


# ----------------------------------------------------------------------------------------------------------------
# attention bias table shared by all attention modules of the family
# ----------------------------------------------------------------------------------------------------------------
class _RelPosBias(nn.Module):
    """Mixin owning ``attention_biases`` (learned per relative offset) and ``attention_bias_idxs``.

    :meth:`attention_bias` returns the ``(heads, Nq, Nk)`` bias for the attention actually computed: the exact
    gathered table when ``(Nq, Nk)`` is the size the table was built for, otherwise that map resized bicubically.
    Outside training the result is cached (a few sizes, keyed by size/device/dtype and invalidated when the
    parameter is changed in place or replaced, e.g. by ``load_state_dict``).
    """

    bias_cache_size: int = 2

    def _init_bias(self, num_heads: int, q_size, k_size, q_stride: int = 1) -> None:
        # the index is always computed for real (also when the model is built under a ``meta`` device context,
        # so that such a model only needs its state dict loaded with ``assign=True``)
        with torch.device("cpu"):
            num_offsets, idx = relative_bias_index(tuple(q_size), tuple(k_size), q_stride)
        default_device = torch.get_default_device() if hasattr(torch, "get_default_device") else idx.device
        if default_device.type != "meta":
            idx = idx.to(default_device)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, num_offsets))
        # recomputed at construction, hence not stored in checkpoints (the converter drops the official copy)
        self.register_buffer("attention_bias_idxs", idx, persistent=False)
        self._bias_cache: Dict[tuple, tuple] = {}

    def _expanded_bias(self, nq: int, nk: int) -> torch.Tensor:
        return resize_bias_map(self.attention_biases[:, self.attention_bias_idxs], (nq, nk))

    def attention_bias(self, nq: int, nk: int, dtype: torch.dtype) -> torch.Tensor:
        if self.training or cache_disabled():
            return self._expanded_bias(nq, nk).to(dtype)
        p = self.attention_biases
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


# ----------------------------------------------------------------------------------------------------------------
# V1 blocks
# ----------------------------------------------------------------------------------------------------------------
class _V1Attention(_RelPosBias):
    """Multi-head self-attention on tokens with LeViT-style relative biases (official ``Attention``)."""

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: float = 4,
                 resolution: int = 7):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.qkv = nn.Linear(dim, self.dh + 2 * key_dim * num_heads)
        self.proj = nn.Linear(self.dh, dim)
        self._init_bias(num_heads, (resolution, resolution), (resolution, resolution))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, N, C)
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, self.num_heads, -1).transpose(1, 2).split(
            [self.key_dim, self.key_dim, self.d], dim=-1)
        x = _biased_attention(q, k, v, self.attention_bias(N, N, q.dtype), self.scale)
        return self.proj(x.transpose(1, 2).reshape(B, N, self.dh))


class _V1ConvMlp(nn.Module):
    """1x1 conv -> BN -> GELU -> 1x1 conv -> BN (official ``Mlp``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        for m in (self.fc1, self.fc2):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.act(conv_with_folded_bn(self.fc1, self.fc1, self.norm1, x))
        return conv_with_folded_bn(self.fc2, self.fc2, self.norm2, x)


class _V1Pooling(nn.Module):
    """Token mixer ``AvgPool3x3(x) - x`` (padding not counted)."""

    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x):
        return self.pool(x) - x


class _V1Block4D(nn.Module):
    """Official ``Meta4D``: pooling mixer and conv MLP, each with a layer scale of shape (C,)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, layer_scale_init_value=1e-5):
        super().__init__()
        self.token_mixer = _V1Pooling(3)
        self.mlp = _V1ConvMlp(dim, int(dim * mlp_ratio))
        self.drop_path = _drop_path(drop_path)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.token_mixer(x))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(x))


class _V1Block3D(nn.Module):
    """Official ``Meta3D``: pre-norm transformer block on tokens with layer scales."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, layer_scale_init_value=1e-5,
                 resolution: int = 7):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = _V1Attention(dim, resolution=resolution)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LinearMlp(dim, int(dim * mlp_ratio))
        self.drop_path = _drop_path(drop_path)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(self.norm2(x)))


class _Flat(nn.Module):
    """(B, C, H, W) -> (B, H*W, C); has no weights but occupies a block index as in the official model."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class _V1Downsample(nn.Module):
    """Official ``Embedding``: conv3x3 stride 2 + BN (keys ``proj`` / ``norm``)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        return conv_with_folded_bn(self.proj, self.proj, self.norm, x)


def _v1_stage(index: int, dim: int, depth: int, vit_num: int, dpr: Sequence[float], layer_scale_init_value,
              resolution: int, num_stages: int) -> nn.Sequential:
    blocks: List[nn.Module] = []
    last = index == num_stages - 1
    n_vit = min(vit_num, depth) if last else 0
    if last and n_vit == depth:
        blocks.append(_Flat())
    for j in range(depth):
        if depth - j <= n_vit:
            blocks.append(_V1Block3D(dim, 4.0, dpr[j], layer_scale_init_value, resolution))
        else:
            blocks.append(_V1Block4D(dim, 4.0, dpr[j], layer_scale_init_value))
            if n_vit and depth - j - 1 == n_vit:
                blocks.append(_Flat())
    return nn.Sequential(*blocks)


# ----------------------------------------------------------------------------------------------------------------
# V2 blocks
# ----------------------------------------------------------------------------------------------------------------
class _V2Attention(_RelPosBias):
    """Official ``Attention4D``: attention on NCHW maps with talking heads and a local value branch.

    With ``stride=2`` (stage 3) the map is first reduced by a depth-wise stride-2 conv and the result is upsampled
    x2 (bilinear) and cropped to the input size.
    """

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: float = 4,
                 resolution: int = 7, stride: Optional[int] = None):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        nh_kd = key_dim * num_heads
        if stride is not None:
            resolution = math.ceil(resolution / stride)
            self.stride_conv = _ConvBN(dim, dim, 3, stride=stride, groups=dim)
        else:
            self.stride_conv = None
        self.stride = stride
        self.resolution = resolution
        self.q = _ConvBN(dim, nh_kd)
        self.k = _ConvBN(dim, nh_kd)
        self.v = _ConvBN(dim, self.dh)
        self.v_local = _ConvBN(self.dh, self.dh, 3, groups=self.dh)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(self.dh, dim, 1), nn.BatchNorm2d(dim))
        self._init_bias(num_heads, (resolution, resolution), (resolution, resolution))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        h, w = x.shape[-2:]
        n = h * w
        q = self.q(x).view(B, self.num_heads, self.key_dim, n).transpose(-2, -1) * self.scale
        k = self.k(x).view(B, self.num_heads, self.key_dim, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.view(B, self.num_heads, self.d, n).transpose(-2, -1)
        attn = torch.matmul(q, k) + self.attention_bias(n, n, q.dtype)
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
        out = torch.matmul(attn, v).transpose(-2, -1).reshape(B, self.dh, h, w) + v_local
        if self.stride_conv is not None:
            out = F.interpolate(out, scale_factor=float(self.stride), mode="bilinear", align_corners=False)
            if out.shape[-2] != H or out.shape[-1] != W:
                out = out[..., :H, :W]
        return self.proj(out)


class _V2LocalGlobalQuery(nn.Module):
    """Official ``LGQuery``: stride-2 depth-wise conv + stride-2 subsampling, then 1x1 conv + BN."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim))
        self.proj = _ConvBN(in_dim, out_dim)

    def forward(self, x):
        # AvgPool2d(kernel 1, stride 2) == taking every second pixel
        return self.proj(self.local(x) + x[..., ::2, ::2])


class _V2AttentionDownsample(_RelPosBias):
    """Official ``Attention4DDownsample``: queries on the stride-2 grid attend to all keys of the input map."""

    def __init__(self, dim: int, out_dim: int, key_dim: int = 16, num_heads: int = 8, attn_ratio: float = 4,
                 resolution: int = 14):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        nh_kd = key_dim * num_heads
        self.resolution = resolution
        self.resolution2 = math.ceil(resolution / 2)
        self.q = _V2LocalGlobalQuery(dim, nh_kd)
        self.k = _ConvBN(dim, nh_kd)
        self.v = _ConvBN(dim, self.dh)
        self.v_local = _ConvBN(self.dh, self.dh, 3, stride=2, groups=self.dh)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(self.dh, out_dim, 1), nn.BatchNorm2d(out_dim))
        self._init_bias(num_heads, (self.resolution2,) * 2, (resolution, resolution),
                        q_stride=math.ceil(resolution / self.resolution2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        n = H * W
        q = self.q(x)
        h2, w2 = q.shape[-2:]
        n2 = h2 * w2
        q = q.view(B, self.num_heads, self.key_dim, n2).transpose(-2, -1)
        k = self.k(x).view(B, self.num_heads, self.key_dim, n).transpose(-2, -1)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.view(B, self.num_heads, self.d, n).transpose(-2, -1)
        out = _biased_attention(q, k, v, self.attention_bias(n2, n, q.dtype), self.scale)
        out = out.transpose(-2, -1).reshape(B, self.dh, h2, w2) + v_local
        return self.proj(out)


class _V2Mlp(nn.Module):
    """1x1 conv + BN + GELU -> depth-wise 3x3 + BN + GELU -> 1x1 conv + BN (official ``Mlp`` with mid conv)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.act = nn.GELU()
        self.mid = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.mid_norm = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        for m in (self.fc1, self.fc2):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.act(conv_with_folded_bn(self.fc1, self.fc1, self.norm1, x))
        x = self.act(conv_with_folded_bn(self.mid, self.mid, self.mid_norm, x))
        return conv_with_folded_bn(self.fc2, self.fc2, self.norm2, x)


class _V2FFN(nn.Module):
    """Official ``FFN``: MLP only, layer scale of shape (C, 1, 1)."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0, layer_scale_init_value=1e-5):
        super().__init__()
        self.mlp = _V2Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = _drop_path(drop_path)
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))

    def forward(self, x):
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class _V2AttnFFN(nn.Module):
    """Official ``AttnFFN``: ``Attention4D`` then MLP, each with a (C, 1, 1) layer scale."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0, layer_scale_init_value=1e-5,
                 resolution: int = 7, stride: Optional[int] = None):
        super().__init__()
        self.token_mixer = _V2Attention(dim, resolution=resolution, stride=stride)
        self.mlp = _V2Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = _drop_path(drop_path)
        self.layer_scale_1 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(x))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class _V2Downsample(nn.Module):
    """Official ``Embedding``: conv3x3 s2 + BN (``proj``/``norm``), or with ``use_attn`` (into the last stage)
    conv3x3 s2 + BN (``conv``/``bn``) plus an ``Attention4DDownsample`` branch (``attn``), summed."""

    def __init__(self, in_ch: int, out_ch: int, use_attn: bool = False, resolution: int = 14):
        super().__init__()
        self.use_attn = use_attn
        if use_attn:
            self.attn = _V2AttentionDownsample(in_ch, out_ch, resolution=resolution)
            self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(out_ch)
        else:
            self.proj = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)
            self.norm = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        if self.use_attn:
            return self.attn(x) + conv_with_folded_bn(self.conv, self.conv, self.bn, x)
        return conv_with_folded_bn(self.proj, self.proj, self.norm, x)


def _v2_stage(index: int, dim: int, depth: int, vit_num: int, mlp_ratios: Sequence[float], dpr: Sequence[float],
              layer_scale_init_value, resolution: int) -> nn.Sequential:
    blocks: List[nn.Module] = []
    for j in range(depth):
        if index >= 2 and j > depth - 1 - vit_num:
            blocks.append(_V2AttnFFN(dim, mlp_ratios[j], dpr[j], layer_scale_init_value, resolution,
                                     stride=2 if index == 2 else None))
        else:
            blocks.append(_V2FFN(dim, mlp_ratios[j], dpr[j], layer_scale_init_value))
    return nn.Sequential(*blocks)


# ----------------------------------------------------------------------------------------------------------------
# backbone / head / classifier
# ----------------------------------------------------------------------------------------------------------------
class EfficientFormerBackbone(BackboneBase):
    """EfficientFormer V1 (``'l1'``, ``'l3'``, ``'l7'``) or V2 (``'s0'``, ``'s1'``, ``'s2'``, ``'l'``) backbone.

    Returns NCHW maps at strides 4/8/16/32 with ``embed_dims`` channels for the stages in ``out_indices``.

    Args:
        arch: variant name (see :data:`ARCH_SETTINGS`) or a settings dict.
        in_channels: input channels (the stem's first conv).
        out_indices: stages whose outputs are returned, in this order.
        frozen_stages: stem and stages ``0..frozen_stages`` are frozen (``-1``: none).
        norm_eval: keep BatchNorm layers in eval mode while training.
        drop_path_rate: stochastic depth, linearly increasing over all blocks (the official ImageNet recipes use
            :data:`OFFICIAL_DROP_PATH`).
        layer_scale_init_value: initial layer scale (official: 1e-5; the official L7 detection config uses 1e-6).
        out_norm: add ``GroupNorm(1, C)`` on each returned map (``norm0/norm2/norm4/norm6``). ``None`` (default)
            follows the official dense-prediction code: on for V1, off for V2.
        img_size: input size the attention-bias tables are defined for (the ImageNet checkpoints use 224).
        channels_last: run channels-last (outputs are returned contiguous NCHW); ``None`` = on CPU only, where it
            is faster (e.g. L1 at 512x512: 217 -> 159 ms on 2 cores).
    """

    def __init__(self, arch="l1", in_channels: int = 3, out_indices=(0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, drop_path_rate: float = 0.0, layer_scale_init_value: float = 1e-5,
                 out_norm: Optional[bool] = None, img_size: int = 224, channels_last: Optional[bool] = None):
        super().__init__()
        self.channels_last = channels_last
        settings = resolve_arch(arch, ARCH_SETTINGS, _FAMILY)
        self.arch = arch if isinstance(arch, str) else "custom"
        self.version = int(settings.get("version", 1))
        embed_dims = list(settings["embed_dims"])
        depths = list(settings["depths"])
        vit_num = int(settings.get("vit_num", 0))
        self.num_stages = len(depths)
        self.embed_dims = embed_dims
        self.stage_channels = list(embed_dims)
        self.stage_strides = [2 ** (i + 2) for i in range(self.num_stages)]
        self.out_indices = normalize_out_indices(out_indices, self.num_stages, _FAMILY)
        self.out_channels = [self.stage_channels[i] for i in self.out_indices]
        self.out_strides = [self.stage_strides[i] for i in self.out_indices]
        self.frozen_stages = self._check_frozen_stages(frozen_stages, self.num_stages, _FAMILY)
        self.norm_eval = bool(norm_eval)
        self.in_channels = in_channels
        self.img_size = int(img_size)
        if out_norm is None:
            out_norm = self.version == 1
        self.out_norm = bool(out_norm)

        dpr = drop_path_rates(drop_path_rate, depths)
        network: List[nn.Module] = []
        if self.version == 1:
            self.patch_embed = _stem(in_channels, embed_dims[0], nn.ReLU)
            attn_res = math.ceil(self.img_size / 32)
            for i in range(self.num_stages):
                if i > 0:
                    network.append(_V1Downsample(embed_dims[i - 1], embed_dims[i]))
                network.append(_v1_stage(i, embed_dims[i], depths[i], vit_num, dpr[i], layer_scale_init_value,
                                         attn_res, self.num_stages))
        elif self.version == 2:
            self.patch_embed = _stem(in_channels, embed_dims[0], nn.GELU)
            mlp_ratios = settings.get("mlp_ratios") or [[4] * d for d in depths]
            for i in range(self.num_stages):
                if i > 0:
                    network.append(_V2Downsample(embed_dims[i - 1], embed_dims[i], use_attn=i >= 3,
                                                 resolution=math.ceil(self.img_size / 2 ** (i + 1))))
                network.append(_v2_stage(i, embed_dims[i], depths[i], vit_num, list(mlp_ratios[i]), dpr[i],
                                         layer_scale_init_value, math.ceil(self.img_size / 2 ** (i + 2))))
        else:
            raise ValueError(f"{_FAMILY}: settings 'version' must be 1 or 2, got {self.version}.")
        self.network = nn.ModuleList(network)

        if self.out_norm:
            for i in self.out_indices:
                self.add_module(f"norm{2 * i}", nn.GroupNorm(1, embed_dims[i]))

        self._init_linear()
        self._freeze_stages()

    def _init_linear(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ---- BackboneBase hooks ----
    def stem_modules(self) -> List[nn.Module]:
        return [self.patch_embed]

    def stage_modules(self) -> List[nn.Module]:
        stages = [self.network[0]]
        for i in range(1, self.num_stages):
            stages.append(nn.ModuleList([self.network[2 * i - 1], self.network[2 * i]]))
        return stages

    def forward(self, x: torch.Tensor):
        check_in_channels(x, self.in_channels, _FAMILY)
        if use_channels_last(self.channels_last, x):
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.patch_embed(x)
        last = max(self.out_indices)
        feats = {}
        for i in range(last + 1):
            if i > 0:
                x = self.network[2 * i - 1](x)
            B, C, H, W = x.shape
            x = self.network[2 * i](x)
            if x.dim() == 3:  # V1 attention blocks work on (B, N, C) tokens
                x = x.transpose(1, 2).reshape(B, C, H, W)
            if i in self.out_indices:
                feats[i] = getattr(self, f"norm{2 * i}")(x) if self.out_norm else x
        return tuple(feats[i].contiguous() for i in self.out_indices)


class EfficientFormerClsHead(nn.Module):
    """Official classifier: final norm (LayerNorm over channels for V1, BatchNorm2d for V2), global average,
    ``head`` and ``dist_head`` (averaged in eval mode, returned as a pair in training like the official model)."""

    def __init__(self, in_channels: int, num_classes: int = 1000, version: int = 1, distillation: bool = True):
        super().__init__()
        self.version = version
        self.distillation = distillation
        self.norm = nn.LayerNorm(in_channels) if version == 1 else nn.BatchNorm2d(in_channels)
        self.head = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()
        if distillation:
            self.dist_head = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def pre_logits(self, feats) -> torch.Tensor:
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        if self.version == 1:
            return self.norm(x.flatten(2).transpose(1, 2)).mean(1)
        return self.norm(x).mean((2, 3))

    def forward(self, feats):
        x = self.pre_logits(feats)
        if not self.distillation:
            return self.head(x)
        out, dist = self.head(x), self.dist_head(x)
        if self.training:
            return out, dist
        return (out + dist) / 2


class EfficientFormerClassifier(nn.Module):
    """The official ImageNet model: :class:`EfficientFormerBackbone` (last stage, no output norm) + head."""

    def __init__(self, arch="l1", num_classes: int = 1000, distillation: bool = True, **backbone_kwargs):
        super().__init__()
        backbone_kwargs.setdefault("out_indices", (3,))
        backbone_kwargs.setdefault("out_norm", False)
        self.backbone = EfficientFormerBackbone(arch, **backbone_kwargs)
        self.head = EfficientFormerClsHead(self.backbone.stage_channels[-1], num_classes,
                                           version=self.backbone.version, distillation=distillation)

    def forward(self, x):
        return self.head(self.backbone(x))


# ----------------------------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------------------------
def convert_official_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official EfficientFormer V1/V2 ImageNet state dict (unwrapped) -> :class:`EfficientFormerClassifier` keys.

    ``norm``/``head``/``dist_head`` go under ``head.``, everything else under ``backbone.``. The stored
    ``attention_bias_idxs`` buffers are dropped (they are rebuilt by the model, identically).
    """
    out: Dict[str, torch.Tensor] = {}
    state_dict = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    converted = any(k.startswith("backbone.") for k in state_dict)  # already in our layout
    for k, v in state_dict.items():
        if k.endswith("attention_bias_idxs") or k.endswith("attention_bias_idxs_seg"):
            continue
        if converted:
            out[k] = v
        elif k.split(".", 1)[0] in _HEAD_KEYS:
            out["head." + k] = v
        else:
            out["backbone." + k] = v
    return out


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Variant name of an official (or converted) EfficientFormer state dict, from its widths and depths."""
    prefix = "backbone." if any(k.startswith("backbone.") for k in state_dict) else ""
    version = 2 if any(".mlp.mid.weight" in k for k in state_dict) else 1
    dims, depths = [], []
    for s in range(4):
        stage = re.compile(rf"^{re.escape(prefix)}network\.{2 * s}\.(\d+)\.mlp\.fc2\.weight$")
        blocks = [m for m in (stage.match(k) for k in state_dict) if m]
        if not blocks:
            raise ValueError("Not an EfficientFormer state dict: no 'network.<stage>.<block>.mlp.fc2' keys found.")
        dims.append(int(state_dict[blocks[0].group(0)].shape[0]))
        depths.append(len(blocks))
    for name, s in ARCH_SETTINGS.items():
        if s["version"] == version and list(s["embed_dims"]) == dims and list(s["depths"]) == depths:
            return name
    raise ValueError(f"No EfficientFormer variant has widths {dims} and depths {depths} (version {version}). "
                     f"Known variants: {', '.join(ARCH_SETTINGS)}.")
