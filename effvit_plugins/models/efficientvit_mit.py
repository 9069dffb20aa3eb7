"""EfficientViT (MIT Han Lab): multi-scale ReLU linear attention. Variants B0-B3 and L0-L3.

Framework-free PyTorch. Module and parameter names follow the official release
(``mit-han-lab/efficientvit``), so an official checkpoint loads after unwrapping (see
:func:`convert_official_checkpoint`). Layout of the official models:

* B series: ``input_stem`` (stride 2) + ``stages[0..3]`` (strides 4..32); attention in the last two stages.
* L series: ``stages[0]`` is the stem (stride 2), ``stages[1..4]`` strides 4..32; attention in the last stage.

Our stage numbering is uniform: stage ``i`` has stride ``2 ** (i + 1)`` (``i = 0..4``), and ``out_indices``
refer to it. The official dense-prediction head (SegHead) reads stages 2, 3, 4.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import BackboneBase, resolve_arch
from .spec import FamilySpec, Paper, SegHead, register_family
from .layers import (ConvNormAct, autocast_off, cache_disabled, is_channels_last, like_memory_format, set_norm_eps,
                     upsample, use_channels_last)

FAMILY = "EfficientViT-MIT"

# width_list: stem, stage1..4; depth_list: stem blocks, stage1..4; dim: attention head dim.
ARCH_SETTINGS: Dict[str, dict] = {
    "b0": dict(series="b", widths=(8, 16, 32, 64, 128), depths=(1, 2, 2, 2, 2), dim=16, head_widths=(1024, 1280)),
    "b1": dict(series="b", widths=(16, 32, 64, 128, 256), depths=(1, 2, 3, 3, 4), dim=16, head_widths=(1536, 1600)),
    "b2": dict(series="b", widths=(24, 48, 96, 192, 384), depths=(1, 3, 4, 4, 6), dim=32, head_widths=(2304, 2560)),
    "b3": dict(series="b", widths=(32, 64, 128, 256, 512), depths=(1, 4, 6, 6, 9), dim=32, head_widths=(2304, 2560)),
    "l0": dict(series="l", widths=(32, 64, 128, 256, 512), depths=(1, 1, 1, 4, 4), dim=32, head_widths=None),
    "l1": dict(series="l", widths=(32, 64, 128, 256, 512), depths=(1, 1, 1, 6, 6), dim=32, head_widths=(3072, 3200)),
    "l2": dict(series="l", widths=(32, 64, 128, 256, 512), depths=(1, 2, 2, 8, 8), dim=32, head_widths=(3072, 3200)),
    "l3": dict(series="l", widths=(64, 128, 256, 512, 1024), depths=(1, 2, 2, 8, 8), dim=32, head_widths=(6144, 6400)),
}
SERIES_DEFAULTS = {
    # activation, norm eps used by the official model zoo, MBConv expand ratio
    "b": dict(act="hswish", eps=1e-5),
    "l": dict(act="gelu", eps=1e-7),
}

# The official SegHead for every published (variant, dataset) pair.
SEG_HEAD_SETTINGS: Dict[Tuple[str, str], dict] = {
    ("b0", "cityscapes"): dict(head_width=32, head_depth=1, expand_ratio=4, middle_op="mbconv", final_expand=4, num_classes=19),
    ("b1", "cityscapes"): dict(head_width=64, head_depth=3, expand_ratio=4, middle_op="mbconv", final_expand=4, num_classes=19),
    ("b2", "cityscapes"): dict(head_width=96, head_depth=3, expand_ratio=4, middle_op="mbconv", final_expand=4, num_classes=19),
    ("b3", "cityscapes"): dict(head_width=128, head_depth=3, expand_ratio=4, middle_op="mbconv", final_expand=4, num_classes=19),
    ("l1", "cityscapes"): dict(head_width=256, head_depth=3, expand_ratio=1, middle_op="fmbconv", final_expand=None, num_classes=19),
    ("l2", "cityscapes"): dict(head_width=256, head_depth=5, expand_ratio=1, middle_op="fmbconv", final_expand=None, num_classes=19),
    ("b1", "ade20k"): dict(head_width=64, head_depth=3, expand_ratio=4, middle_op="mbconv", final_expand=None, num_classes=150),
    ("b2", "ade20k"): dict(head_width=96, head_depth=3, expand_ratio=4, middle_op="mbconv", final_expand=None, num_classes=150),
    ("b3", "ade20k"): dict(head_width=128, head_depth=3, expand_ratio=4, middle_op="mbconv", final_expand=None, num_classes=150),
    ("l1", "ade20k"): dict(head_width=128, head_depth=3, expand_ratio=4, middle_op="fmbconv", final_expand=8, num_classes=150),
    ("l2", "ade20k"): dict(head_width=128, head_depth=3, expand_ratio=4, middle_op="fmbconv", final_expand=8, num_classes=150),
}

OFFICIAL_KEY_SIGNATURE = ("context_module.main.qkv.conv.weight", "op_list.0.conv.weight")


# ---------------------------------------------------------------------------------------------------------------
# Basic layers (official names: conv / norm / act, main / shortcut, op_list)
# ---------------------------------------------------------------------------------------------------------------
def build_act(name: Optional[str]) -> Optional[nn.Module]:
    if name is None:
        return None
    if name == "hswish":
        return nn.Hardswish()
    if name == "gelu":
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    if name == "relu6":
        return nn.ReLU6()
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"Unknown activation {name!r}; valid: hswish, gelu, relu, relu6, silu.")


def _triple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


class ConvLayer(ConvNormAct):
    """Conv2d ('same' padding) -> optional BatchNorm -> optional activation (optional Dropout2d first); official
    child names ``conv`` / ``norm`` / ``act``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 bias: bool = False, dropout: float = 0.0, norm: bool = True, act: Optional[str] = "relu"):
        super().__init__(nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias),
                         nn.BatchNorm2d(out_ch) if norm else None, build_act(act), dropout=dropout)


class OpSequential(nn.Module):
    """A sequence stored as ``op_list`` (official layout); ``None`` entries are dropped."""

    def __init__(self, ops: Sequence[Optional[nn.Module]]):
        super().__init__()
        self.op_list = nn.ModuleList([op for op in ops if op is not None])

    def forward(self, x):
        for op in self.op_list:
            x = op(x)
        return x


class ResidualBlock(nn.Module):
    """``main(x) + x`` when ``residual`` else ``main(x)`` (stride-2 blocks); official names main / shortcut."""

    def __init__(self, main: nn.Module, residual: bool = True):
        super().__init__()
        self.main = main
        self.shortcut = nn.Identity() if residual else None

    def forward(self, x):
        if self.shortcut is None:
            return self.main(x)
        return self.main(x) + self.shortcut(x)


class DSConv(nn.Module):
    def __init__(self, in_ch, out_ch, stride=1, bias=(False, False), norm=(True, True), act=("hswish", None)):
        super().__init__()
        self.depth_conv = ConvLayer(in_ch, in_ch, 3, stride, groups=in_ch, bias=bias[0], norm=norm[0], act=act[0])
        self.point_conv = ConvLayer(in_ch, out_ch, 1, bias=bias[1], norm=norm[1], act=act[1])

    def forward(self, x):
        return self.point_conv(self.depth_conv(x))


class MBConv(nn.Module):
    def __init__(self, in_ch, out_ch, stride=1, expand_ratio=4.0, bias=(False,) * 3, norm=(True,) * 3,
                 act=("hswish", "hswish", None)):
        super().__init__()
        mid = round(in_ch * expand_ratio)
        self.inverted_conv = ConvLayer(in_ch, mid, 1, bias=bias[0], norm=norm[0], act=act[0])
        self.depth_conv = ConvLayer(mid, mid, 3, stride, groups=mid, bias=bias[1], norm=norm[1], act=act[1])
        self.point_conv = ConvLayer(mid, out_ch, 1, bias=bias[2], norm=norm[2], act=act[2])

    def forward(self, x):
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class FusedMBConv(nn.Module):
    def __init__(self, in_ch, out_ch, stride=1, expand_ratio=4.0, bias=(False, False), norm=(True, True),
                 act=("gelu", None)):
        super().__init__()
        mid = round(in_ch * expand_ratio)
        self.spatial_conv = ConvLayer(in_ch, mid, 3, stride, bias=bias[0], norm=norm[0], act=act[0])
        self.point_conv = ConvLayer(mid, out_ch, 1, bias=bias[1], norm=norm[1], act=act[1])

    def forward(self, x):
        return self.point_conv(self.spatial_conv(x))


class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, stride=1, expand_ratio=1.0, bias=(False, False), norm=(True, True),
                 act=("gelu", None)):
        super().__init__()
        mid = round(in_ch * expand_ratio)
        self.conv1 = ConvLayer(in_ch, mid, 3, stride, bias=bias[0], norm=norm[0], act=act[0])
        self.conv2 = ConvLayer(mid, out_ch, 3, 1, bias=bias[1], norm=norm[1], act=act[1])

    def forward(self, x):
        return self.conv2(self.conv1(x))


def local_block(kind: str, in_ch: int, out_ch: int, stride: int, expand_ratio: float, act: str,
                fewer_norm: bool = False) -> nn.Module:
    """The official ``build_local_block``: 'ds', 'mb', 'fmb' or 'res' with the 'fewer_norm' variant."""
    if kind == "mb":
        if fewer_norm:
            return MBConv(in_ch, out_ch, stride, expand_ratio, (True, True, False), (False, False, True), (act, act, None))
        return MBConv(in_ch, out_ch, stride, expand_ratio, (False,) * 3, (True,) * 3, (act, act, None))
    two = dict(bias=(True, False), norm=(False, True)) if fewer_norm else dict(bias=(False, False), norm=(True, True))
    if kind == "ds":
        return DSConv(in_ch, out_ch, stride, act=(act, None), **two)
    if kind == "fmb":
        return FusedMBConv(in_ch, out_ch, stride, expand_ratio, act=(act, None), **two)
    if kind == "res":
        return ResBlock(in_ch, out_ch, stride, expand_ratio, act=(act, None), **two)
    raise ValueError(f"unknown block kind {kind!r}")


class GroupedPointwiseConv(nn.Conv2d):
    """A grouped 1x1 convolution (bias-free) computed as one batched matrix product over the groups.

    PyTorch's CPU convolution runs a grouped 1x1 conv as one small GEMM call per group (96 per attention layer in
    L3's last stage); a single ``bmm`` of the ``(groups, tokens, in/groups)`` view does the same sums at once. The
    parameter is the ``Conv2d`` weight (same checkpoint key and shape); channels-last inputs give channels-last
    outputs.
    """

    def __init__(self, channels: int, groups: int):
        super().__init__(channels, channels, 1, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # exported (traced / scripted) as the grouped Conv it is (runtimes have fast grouped convs)
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return self._conv_forward(x, self.weight, self.bias)
        return self._bmm(x)

    @torch.jit.unused  # (TorchScript: the convolution)
    def _bmm(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        g = self.groups
        w = self.weight.view(g, self.out_channels // g, C // g)  # (g, out/g, in/g)
        if is_channels_last(x):  # token view (g, B*H*W, in/g) of the (B, H, W, C) storage, no copy
            t = x.permute(0, 2, 3, 1).reshape(B * H * W, g, C // g).transpose(0, 1)
            y = torch.bmm(t, w.transpose(1, 2))  # (g, B*H*W, out/g)
            return y.transpose(0, 1).reshape(B, H, W, self.out_channels).permute(0, 3, 1, 2)
        return torch.matmul(w, x.reshape(B, g, C // g, H * W)).reshape(B, self.out_channels, H, W)


# ---------------------------------------------------------------------------------------------------------------
# Multi-scale ReLU linear attention
# ---------------------------------------------------------------------------------------------------------------
class LiteMLA(nn.Module):
    """Lightweight multi-scale linear attention (ReLU kernel).

    ``qkv`` (1x1) produces q, k, v for ``heads = in_ch // dim`` heads; each extra scale aggregates them with a
    depth-wise ``s x s`` conv followed by a grouped 1x1 conv, doubling the effective heads for ``scales=(5,)``.
    The attention arithmetic always runs in float32 with autocast disabled: under fp16/bf16 the ``v . k^T`` sums
    and the normalising division overflow or lose precision (official fix, mit-han-lab/efficientvit #15, #110).
    When ``H * W <= dim`` the quadratic form (normalised ``k^T q`` map) is cheaper and is used, as upstream.
    """

    def __init__(self, in_ch: int, out_ch: int, dim: int = 8, heads_ratio: float = 1.0, scales=(5,),
                 eps: float = 1.0e-15):
        super().__init__()
        heads = int(in_ch // dim * heads_ratio)
        total = heads * dim
        self.dim = dim
        self.eps = eps
        self.qkv = ConvLayer(in_ch, 3 * total, 1, bias=False, norm=False, act=None)
        self.aggreg = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=False),
                GroupedPointwiseConv(3 * total, groups=3 * heads),
            ) for s in scales
        ])
        self.kernel_func = nn.ReLU(inplace=False)
        self.proj = ConvLayer(total * (1 + len(scales)), out_ch, 1, bias=False, norm=True, act=None)

    def _attention(self, qkv: torch.Tensor) -> torch.Tensor:
        H, W = qkv.shape[-2], qkv.shape[-1]
        if H * W > self.dim and is_channels_last(qkv):
            return self._linear_attention_tokens(qkv)
        return self._attention_nchw(qkv)

    def _attention_nchw(self, qkv: torch.Tensor) -> torch.Tensor:
        B, C, H, W = qkv.shape[0], qkv.shape[1], qkv.shape[2], qkv.shape[3]
        qkv = qkv.float().reshape(B, C // (3 * self.dim), 3 * self.dim, H * W)
        q = self.kernel_func(qkv[:, :, :self.dim])
        k = self.kernel_func(qkv[:, :, self.dim:2 * self.dim])
        v = qkv[:, :, 2 * self.dim:]
        if H * W > self.dim:
            # (v | 1) k^T : (B, h, d+1, d); then times q : (B, h, d+1, N). Last row is the normaliser.
            v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)
            out = torch.matmul(torch.matmul(v, k.transpose(-1, -2)), q)
            out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        else:
            att = torch.matmul(k.transpose(-1, -2), q)  # (B, h, N, N)
            att = att / (att.sum(dim=2, keepdim=True) + self.eps)
            out = torch.matmul(v, att)
        return out.reshape(B, C // 3, H, W)

    def _linear_attention_tokens(self, qkv: torch.Tensor) -> torch.Tensor:
        """The linear attention of a channels-last ``qkv`` map, computed on its token view (no layout copies).

        The same products as :meth:`_attention`, transposed: per head ``k^T (v | 1)`` is ``(d, d+1)`` and
        ``q (k^T (v | 1))`` is ``(N, d+1)`` whose last column normalises. The result is written straight into a
        channels-last map (what the following 1x1 projection reads), instead of being reshaped and copied twice.
        """
        B, C, H, W = qkv.shape
        d, heads = self.dim, C // (3 * self.dim)
        t = qkv.permute(0, 2, 3, 1).float().reshape(B, H * W, heads, 3 * d).transpose(1, 2)  # (B, h, N, 3d) view
        q = self.kernel_func(t[..., :d])
        k = self.kernel_func(t[..., d:2 * d])
        v = F.pad(t[..., 2 * d:], (0, 1), mode="constant", value=1.0)  # (B, h, N, d+1)
        out = torch.matmul(q, torch.matmul(k.transpose(-1, -2), v))  # (B, h, N, d+1)
        num, den = out[..., :d], out[..., d:] + self.eps
        if torch.is_grad_enabled() or cache_disabled():  # autograd / export / torch.compile: no out= argument
            result = (num / den).transpose(1, 2).reshape(B, H, W, heads * d)
        else:
            result = qkv.new_empty((B, H, W, heads * d), dtype=out.dtype)
            torch.div(num, den, out=result.view(B, H * W, heads, d).transpose(1, 2))
        return result.permute(0, 3, 1, 2)  # (B, C/3, H, W), channels-last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        parts = [qkv]
        for op in self.aggreg:
            parts.append(op(qkv))
        qkv = torch.cat(parts, dim=1)
        if torch.jit.is_scripting():  # (no autocast in TorchScript)
            out = self._attention_nchw(qkv)
        else:
            out = self._attention_autocast_off(qkv)
        return self.proj(like_memory_format(out.to(qkv.dtype), x))

    @torch.jit.unused  # (TorchScript: _attention_nchw, autocast does not exist there)
    def _attention_autocast_off(self, qkv: torch.Tensor) -> torch.Tensor:
        with autocast_off(qkv):
            return self._attention(qkv)


class EfficientViTBlock(nn.Module):
    """``context_module`` (residual LiteMLA) followed by ``local_module`` (residual MBConv, fewer-norm)."""

    def __init__(self, ch: int, dim: int, expand_ratio: float, act: str, scales=(5,)):
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(ch, ch, dim=dim, scales=scales))
        self.local_module = ResidualBlock(local_block("mb", ch, ch, 1, expand_ratio, act, fewer_norm=True))

    def forward(self, x):
        return self.local_module(self.context_module(x))


# ---------------------------------------------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------------------------------------------
class EfficientViTMITBackbone(BackboneBase):
    """EfficientViT (MIT) backbone for classification and dense prediction.

    Args:
        arch (str | dict): ``'b0'..'b3'`` or ``'l0'..'l3'`` (or a dict with the keys of the ``ARCH_SETTINGS``
            entries: series, widths, depths, dim; head_widths optional). Required.
        in_channels (int): input image channels. Default 3.
        out_indices (Sequence[int]): feature maps to return; map ``i`` has stride ``2**(i+1)``
            (0: the stem, stride 2; 1: 4; 2: 8; 3: 16; 4: 32). Default ``(1, 2, 3, 4)``.
        frozen_stages (int): -1 freezes nothing, 0 the stem (map 0), k the stem and the stages of maps 1..k.
        norm_eval (bool): keep BatchNorm layers in eval mode while training.
        norm_eps (float, optional): BN eps; defaults to the official value (1e-5 for B, 1e-7 for L).
        attn_eps (float): epsilon of the linear-attention normaliser (official 1e-15).
        channels_last (bool, optional): run the convolutions in channels-last layout (outputs are returned in
            the usual contiguous NCHW layout). ``None`` = on the CPU, where it is about 1.6x faster at inference
            and 1.1-1.3x in training.
        with_cp (bool): gradient checkpointing (OpenMMLab's name; the same switch as ``set_grad_checkpointing``): every
            block (and stem / downsampling layer) is recomputed in the backward pass instead of keeping its
            activations -- much less activation memory at large inputs, about one more forward of compute.
            Active only while training with autograd. Default False.

    At inference (eval mode, no autograd) BatchNorm is folded into the preceding convolution and activations run
    in place; results equal the training-graph computation up to float rounding.
    """

    FAMILY = FAMILY

    def __init__(self, arch=None, in_channels: int = 3, out_indices=(1, 2, 3, 4), frozen_stages: int = -1,
                 norm_eval: bool = False, norm_eps: Optional[float] = None, attn_eps: float = 1.0e-15,
                 channels_last: Optional[bool] = None, with_cp: bool = False):
        super().__init__()
        cfg = resolve_arch(arch, ARCH_SETTINGS, FAMILY, optional=("head_widths", "act"))
        if cfg["series"] not in SERIES_DEFAULTS:
            raise ValueError(f"{FAMILY}: arch 'series' must be 'b' or 'l', got {cfg['series']!r}.")
        self.channels_last = channels_last
        self.arch = arch if isinstance(arch, str) else "custom"
        self.series = cfg["series"]
        self.act_name = cfg.get("act", SERIES_DEFAULTS[self.series]["act"])
        widths, depths, dim, act = cfg["widths"], cfg["depths"], cfg["dim"], self.act_name

        if self.series == "b":
            stem = [ConvLayer(in_channels, widths[0], 3, 2, act=act)]
            stem += [ResidualBlock(local_block("ds", widths[0], widths[0], 1, 1, act)) for _ in range(depths[0])]
            self.input_stem = OpSequential(stem)
            stages, c = [], widths[0]
            for i in (1, 2):  # MBConv stages with full norm
                blocks = []
                for j in range(depths[i]):
                    blocks.append(ResidualBlock(local_block("mb", c, widths[i], 2 if j == 0 else 1, 4, act), j > 0))
                    c = widths[i]
                stages.append(OpSequential(blocks))
            for i in (3, 4):  # attention stages
                blocks = [ResidualBlock(local_block("mb", c, widths[i], 2, 4, act, fewer_norm=True), False)]
                c = widths[i]
                blocks += [EfficientViTBlock(c, dim, 4, act) for _ in range(depths[i])]
                stages.append(OpSequential(blocks))
            self.stages = nn.ModuleList(stages)
            names = ["input_stem"] + [f"stages.{i}" for i in range(4)]
        else:
            kinds = ("res", "fmb", "fmb", "mb", "att")
            expands = (1, 4, 4, 4, 6)
            fewer = (False, False, False, True, True)
            stem = [ConvLayer(in_channels, widths[0], 3, 2, act=act)]
            stem += [ResidualBlock(local_block("res", widths[0], widths[0], 1, 1, act)) for _ in range(depths[0])]
            stages, c = [OpSequential(stem)], widths[0]
            for i in range(1, 5):
                down_kind = kinds[i] if kinds[i] in ("mb", "fmb") else "mb"
                blocks = [ResidualBlock(local_block(down_kind, c, widths[i], 2, expands[i] * 4, act, fewer[i]), False)]
                c = widths[i]
                for _ in range(depths[i]):
                    if kinds[i] == "att":
                        blocks.append(EfficientViTBlock(c, dim, expands[i], act))
                    else:
                        blocks.append(ResidualBlock(local_block(kinds[i], c, c, 1, expands[i], act, fewer[i])))
                stages.append(OpSequential(blocks))
            self.stages = nn.ModuleList(stages)
            names = [f"stages.{i}" for i in range(5)]

        for m in self.modules():
            if isinstance(m, LiteMLA):
                m.eps = attn_eps
        set_norm_eps(self, norm_eps if norm_eps is not None else SERIES_DEFAULTS[self.series]["eps"])
        self.init_contract(list(widths), [2, 4, 8, 16, 32], names, in_channels, out_indices, frozen_stages,
                           norm_eval, with_cp)

    def _sequences(self) -> List[OpSequential]:
        """The five op sequences producing maps 0..4 (the stem first)."""
        if self.series == "b":
            return [self.input_stem] + list(self.stages)
        return list(self.stages)

    def stem_modules(self) -> List[nn.Module]:
        return self._sequences()[:1]

    def stage_modules(self) -> List[nn.Module]:
        return self._sequences()[1:]

    def feature_steps(self):
        return [list(seq.op_list) for seq in self._sequences()]

    def script_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        maps: List[torch.Tensor] = []
        if hasattr(self, "input_stem"):  # B series
            x = self.input_stem(x)
            maps.append(x)
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps



# ---------------------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------------------
class LinearLayer(nn.Module):
    def __init__(self, in_f, out_f, bias=True, dropout=0.0, norm=False, act=None):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.linear = nn.Linear(in_f, out_f, bias=bias)
        self.norm = nn.LayerNorm(out_f) if norm else None
        self.act = build_act(act)

    def forward(self, x):
        x = torch.flatten(x, 1)
        if self.dropout is not None:
            x = self.dropout(x)
        x = self.linear(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class EfficientViTMITClsHead(nn.Module):
    """Official ImageNet head: 1x1 conv (BN, act) -> global average pool -> Linear+LN+act -> Linear.

    ``forward`` takes the backbone tuple (last element used) or a single NCHW map.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], num_classes: int = 1000, dropout: float = 0.0,
                 act: str = "hswish", norm_eps: float = 1e-5):
        super().__init__()
        self.op_list = nn.ModuleList([
            ConvLayer(in_channels, widths[0], 1, act=act),
            nn.AdaptiveAvgPool2d(1),
            LinearLayer(widths[0], widths[1], bias=False, norm=True, act=act),
            LinearLayer(widths[1], num_classes, bias=True, dropout=dropout),
        ])
        set_norm_eps(self, norm_eps)

    def pre_logits(self, feats):
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        for op in self.op_list[:-1]:
            x = op(x)
        return x

    def forward(self, feats):
        return self.op_list[-1](self.pre_logits(feats))


class EfficientViTMITClassifier(nn.Module):
    """Official ImageNet classifier = backbone (last stage) + :class:`EfficientViTMITClsHead`."""

    # official checkpoint names of our keys (our prefix -> theirs): the official names are ours
    official_key_prefixes = ()

    def __init__(self, arch=None, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0, **kwargs):
        super().__init__()
        cfg = resolve_arch(arch, ARCH_SETTINGS, FAMILY, optional=("head_widths", "act"))
        if cfg.get("head_widths") is None:
            raise ValueError(f"{FAMILY} {arch!r} has no published ImageNet head; use it as a backbone only.")
        self.backbone = EfficientViTMITBackbone(arch, in_channels=in_channels, out_indices=(4,), **kwargs)
        series = cfg["series"]
        self.head = EfficientViTMITClsHead(cfg["widths"][-1], cfg["head_widths"], num_classes, dropout,
                                           act=SERIES_DEFAULTS[series]["act"], norm_eps=SERIES_DEFAULTS[series]["eps"])

    def forward(self, x):
        return self.head(self.backbone(x))


def resize_to(x: torch.Tensor, size, mode: str = "bicubic") -> torch.Tensor:
    """Upsample in float32 with autocast off (bicubic under half precision is inaccurate), to an exact size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    with autocast_off(x):
        return upsample(x.float(), size, mode).to(x.dtype)


class UpSampleLayer(nn.Module):
    """Upsample to the spatial size of a reference map (official: fixed factor; see SegHeadCore)."""

    def __init__(self, mode: str = "bicubic"):
        super().__init__()
        self.mode = mode

    def forward(self, x, size):
        return resize_to(x, size, self.mode)


class SegHeadCore(nn.Module):
    """The official EfficientViT SegHead as a plain module (used by the OpenMMLab decode head).

    Inputs at strides 32/16/8 (stages 4, 3, 2) go through a 1x1 ConvLayer (BN, no act); the coarser ones are
    upsampled (bicubic) and all are summed, then ``middle`` (``head_depth`` residual MBConv / FusedMBConv blocks)
    and ``final_expand`` (optional 1x1 ConvLayer with act). Upsampling targets the exact size of the stride-8 map
    instead of a fixed factor, so inputs whose sides are not multiples of 32 work (the official model fails
    there); for multiples of 32 the result is identical. The classifier conv is not part of this module.
    """

    def __init__(self, in_channels: Sequence[int], head_width: int, head_depth: int, expand_ratio: float,
                 middle_op: str, final_expand: Optional[float], act: str = "hswish", norm_eps: float = 1e-5,
                 upsample_mode: str = "bicubic"):
        super().__init__()
        if middle_op not in ("mbconv", "fmbconv"):
            raise ValueError(f"middle_op must be 'mbconv' or 'fmbconv', got {middle_op!r}")
        ops = []
        for i, c in enumerate(in_channels):  # in order stage4, stage3, stage2 (last one is at head stride)
            conv = ConvLayer(c, head_width, 1, act=None)
            ops.append(conv if i == len(in_channels) - 1 else OpSequential([conv]))
        self.input_ops = nn.ModuleList(ops)
        self.upsample = UpSampleLayer(upsample_mode)
        blocks = []
        for _ in range(head_depth):
            if middle_op == "mbconv":
                blk = MBConv(head_width, head_width, 1, expand_ratio, act=(act, act, None))
            else:
                blk = FusedMBConv(head_width, head_width, 1, expand_ratio, act=(act, None))
            blocks.append(ResidualBlock(blk))
        self.middle = OpSequential(blocks)
        self.final_expand = None if final_expand is None else ConvLayer(
            head_width, int(head_width * final_expand), 1, act=act)
        self.out_channels = head_width * (final_expand or 1)
        set_norm_eps(self, norm_eps)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """``feats`` ordered as ``input_ops`` (coarsest first, the head-stride map last)."""
        return seg_head_features(self, feats)


def seg_head_features(head: nn.Module, feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """SegHead fusion on any module holding ``input_ops``, ``upsample``, ``middle`` and ``final_expand``."""
    size = feats[-1].shape[-2:]
    if use_channels_last(getattr(head, "channels_last", None), feats[-1]):
        feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    x = None
    for op, f in zip(head.input_ops, feats):
        y = head.upsample(op(f), size)
        x = y if x is None else x + y
    x = head.middle(x)
    if head.final_expand is not None:
        x = head.final_expand(x)
    return x.contiguous()


# ---------------------------------------------------------------------------------------------------------------
# Official checkpoints
# ---------------------------------------------------------------------------------------------------------------
def convert_official_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official MIT checkpoint (already unwrapped) -> our layouts.

    * classification (``head.op_list.*``): keys are unchanged (``backbone.*``, ``head.op_list.*``) -- the layout of
      :class:`EfficientViTMITClassifier` and of the mmpretrain configs.
    * segmentation (``head.input_ops.*``, ``head.middle.*``, ``head.output_ops.*``): the mmseg ``EncoderDecoder``
      layout -- the SegHead parts go to ``decode_head.input_ops/middle/final_expand`` and the classifier conv to
      ``decode_head.conv_seg``.
    """
    is_seg = any(k.startswith(("head.output_ops.", "head.input_ops.")) for k in state_dict)
    if not is_seg:
        return dict(state_dict)
    # segout = [final_expand ConvLayer?, classifier ConvLayer(with bias)]; op_list drops the missing expand.
    seg_ops = sorted({int(k.split(".")[4]) for k in state_dict if k.startswith("head.output_ops.0.op_list.")})
    if not seg_ops:
        raise ValueError(f"{FAMILY}: a segmentation checkpoint without head.output_ops.0.op_list.* keys.")
    cls_idx = seg_ops[-1]
    out = {}
    for k, v in state_dict.items():
        if not k.startswith("head."):
            out[k] = v
            continue
        rest = k[len("head."):]
        if rest.startswith("output_ops.0.op_list."):
            idx, tail = rest[len("output_ops.0.op_list."):].split(".", 1)
            if int(idx) == cls_idx:
                out["decode_head.conv_seg." + tail.split("conv.", 1)[1]] = v
            else:
                out["decode_head.final_expand." + tail] = v
        else:
            out["decode_head." + rest] = v
    return out


def _seg_head_kwargs(variant: str, dataset: str) -> dict:
    a = ARCH_SETTINGS[variant]
    s = SERIES_DEFAULTS[a["series"]]
    return dict(in_channels=[a["widths"][4], a["widths"][3], a["widths"][2]], **SEG_HEAD_SETTINGS[(variant, dataset)],
                act=s["act"], norm_eps=s["eps"])


def _cls_head_kwargs(variant: str) -> dict:
    a = ARCH_SETTINGS[variant]
    s = SERIES_DEFAULTS[a["series"]]
    return dict(widths=a["head_widths"], act=s["act"], norm_eps=s["eps"])


SPEC = register_family(FamilySpec(
    key="efficientvit_mit", title="EfficientViT (MIT)", name="EfficientViTMIT",
    config_folder="efficientvit_mit", config_prefix="efficientvit-mit",
    backbone=EfficientViTMITBackbone, cls_head=EfficientViTMITClsHead, classifier=EfficientViTMITClassifier,
    arch_settings=ARCH_SETTINGS,
    # L0 has no released ImageNet model (no head widths); it stays buildable but gets no configs
    variants=tuple(v for v, a in ARCH_SETTINGS.items() if a["head_widths"] is not None),
    feature_strides=(2, 4, 8, 16, 32),
    convert=convert_official_checkpoint, key_signature=OFFICIAL_KEY_SIGNATURE,
    imagenet_weights="efficientvit_{v}_r224.pt",
    # the official classification README's checkpoint links (mit-han-lab/efficientvit
    # applications/efficientvit_cls/README.md), HuggingFace's direct form; it links no B0 file
    weights_url="https://huggingface.co/han-cai/efficientvit-cls/resolve/main/efficientvit_{v}_r224.pt",
    weights_variants=tuple(v for v, a in ARCH_SETTINGS.items() if a["head_widths"] is not None and v != "b0"),
    dense_norm_eval=True, det_variant="b1",
    seg_head=SegHead(model_base="efficientvit-seghead",
                     config_name="efficientvit-seghead_efficientvit-{v}_8xb2-160k_{dataset}",
                     schedule="adamw_cosine_160k", settings={k: _seg_head_kwargs(*k) for k in SEG_HEAD_SETTINGS},
                     source="mit-han-lab/efficientvit applications/efficientvit_seg/README.md"),
    cls_head_kwargs=_cls_head_kwargs,
    cls_crop_pct=lambda a: 0.95 if a["series"] == "b" else 1.0,
    paper=Paper(authors="Cai et al.", venue="ICCV 2023", arxiv="2205.14756",
                title="EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense Prediction",
                code="mit-han-lab/efficientvit"),
    architecture=("Multi-Scale Linear Attention", "MBConv", "Depthwise Convolution"),
))
