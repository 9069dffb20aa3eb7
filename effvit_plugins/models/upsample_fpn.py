"""Upsampling FPN for backbones whose finest map is coarser than stride 4 (EfficientViT-MSRA: strides 16/32/64).

Behaviour of the official MSRA detection neck (``EfficientViTFPN`` in microsoft/Cream ``EfficientViT/downstream``):
an FPN over the backbone maps (1x1 lateral convs, nearest top-down addition, 3x3 output convs, optional extra
coarser levels by max pooling or stride-2 convs) plus ``num_extra_trans_convs`` finer levels. Each finer level is
made by a 2x2 stride-2 transposed convolution of the next finer *lateral* (after the top-down pass), chained, and
gets its own 3x3 output conv. Outputs are ordered finest first: ``[extra finer ..., FPN levels, extra coarser]``.

Official detection settings: RetinaNet ``num_outs=5, num_extra_trans_convs=1, add_extra_convs='on_input'``
(strides 8..128); Mask R-CNN ``num_outs=5, num_extra_trans_convs=2`` (strides 4..64).

Module names follow the official checkpoints: ``lateral_convs.{i}.conv``, ``fpn_convs.{i}.conv`` (extra stride-2
convs appended), ``extra_trans_convs.{i}.conv`` and ``extra_fpn_convs.{i}.conv`` (plus ``.bn``/``.gn`` when a norm
is used, as mmcv's ``ConvModule`` names them).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["UpsampleFPN"]

_EXTRA_SOURCES = ("on_input", "on_lateral", "on_output")


class _ConvUnit(nn.Module):
    """conv (+ norm) (+ ReLU); the norm is stored as ``bn`` / ``gn`` like mmcv's ``ConvModule``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 norm: Optional[str] = None, act: bool = False, transposed: bool = False):
        super().__init__()
        conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv_cls(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=norm is None)
        self.norm_name = None
        if norm is not None:
            if norm not in ("BN", "SyncBN", "GN"):
                raise ValueError(f"UpsampleFPN: norm must be None, 'BN', 'SyncBN' or 'GN', got {norm!r}.")
            self.norm_name = "gn" if norm == "GN" else "bn"
            layer = nn.GroupNorm(32, out_ch) if norm == "GN" else (
                nn.SyncBatchNorm(out_ch) if norm == "SyncBN" else nn.BatchNorm2d(out_ch))
            self.add_module(self.norm_name, layer)
        self.act = nn.ReLU(inplace=False) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        # (attributes by literal name, for TorchScript)
        if hasattr(self, "bn"):
            x = self.bn(x)
        elif hasattr(self, "gn"):
            x = self.gn(x)
        return x if self.act is None else self.act(x)


class UpsampleFPN(nn.Module):
    """FPN with extra finer levels from transposed convolutions (the official EfficientViT-MSRA neck).

    Args:
        in_channels (Sequence[int]): channels of the backbone maps, finest first.
        out_channels (int): channels of every output level.
        num_outs (int): number of output levels in total (finer + FPN + coarser).
        start_level (int): first backbone map used. Default 0.
        end_level (int): last backbone map used (inclusive index; -1 = the last). Default -1.
        add_extra_convs (bool | str): coarser levels by stride-2 3x3 convs instead of max pooling, computed from
            ``'on_input'`` (the last backbone map used), ``'on_lateral'`` or ``'on_output'``; ``True`` means
            ``'on_input'``. Default False (max pooling).
        relu_before_extra_convs (bool): ReLU before the second and later extra convs. Default False.
        num_extra_trans_convs (int): finer levels made by 2x2 stride-2 transposed convs. Default 0.
        norm (str, optional): ``None`` (official), ``'BN'``, ``'SyncBN'`` or ``'GN'`` after every conv.
        no_norm_on_lateral (bool): no norm on the lateral and transposed convs. Default False.
        upsample_mode (str): interpolation of the top-down pass. Default ``'nearest'``.

    ``forward(feats)`` takes the backbone maps (a sequence, finest first) and returns a tuple of ``num_outs`` maps,
    finest first; ``out_strides(in_strides)`` tells their strides.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int, start_level: int = 0,
                 end_level: int = -1, add_extra_convs: Union[bool, str] = False,
                 relu_before_extra_convs: bool = False, num_extra_trans_convs: int = 0,
                 norm: Optional[str] = None, no_norm_on_lateral: bool = False, upsample_mode: str = "nearest"):
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        if not in_channels:
            raise ValueError("UpsampleFPN: in_channels must list the channels of at least one backbone map.")
        self.in_channels = in_channels
        self.out_channels = int(out_channels)
        self.num_ins = len(in_channels)
        self.num_outs = int(num_outs)
        self.start_level = int(start_level)
        self.end_level = self.num_ins - 1 if end_level == -1 else int(end_level)
        if not 0 <= self.start_level <= self.end_level < self.num_ins:
            raise ValueError(f"UpsampleFPN: need 0 <= start_level <= end_level < {self.num_ins} (number of inputs), "
                             f"got start_level={start_level}, end_level={end_level}.")
        self.num_levels = self.end_level - self.start_level + 1
        self.num_extra_trans_convs = int(num_extra_trans_convs)
        extra = self.num_outs - self.num_levels - self.num_extra_trans_convs
        if extra < 0:
            raise ValueError(
                f"UpsampleFPN: num_outs={num_outs} is smaller than the {self.num_levels} backbone levels used plus "
                f"num_extra_trans_convs={num_extra_trans_convs}; raise num_outs or lower num_extra_trans_convs.")
        self.num_extra_coarse = extra
        if add_extra_convs is True:
            add_extra_convs = "on_input"
        if add_extra_convs not in (False, None) and add_extra_convs not in _EXTRA_SOURCES:
            raise ValueError(f"UpsampleFPN: add_extra_convs must be False or one of {_EXTRA_SOURCES}, "
                             f"got {add_extra_convs!r}.")
        self.add_extra_convs = add_extra_convs or False
        self._extra_source = add_extra_convs or ""  # (a str in any case, for TorchScript)
        self.relu_before_extra_convs = bool(relu_before_extra_convs)
        self.upsample_mode = upsample_mode
        lat_norm = None if no_norm_on_lateral else norm

        self.lateral_convs = nn.ModuleList(
            _ConvUnit(in_channels[i], self.out_channels, 1, norm=lat_norm)
            for i in range(self.start_level, self.end_level + 1))
        self.fpn_convs = nn.ModuleList(
            _ConvUnit(self.out_channels, self.out_channels, 3, padding=1, norm=norm) for _ in range(self.num_levels))
        if self.add_extra_convs:
            for i in range(extra):
                src = in_channels[self.end_level] if i == 0 and self.add_extra_convs == "on_input" \
                    else self.out_channels
                self.fpn_convs.append(_ConvUnit(src, self.out_channels, 3, stride=2, padding=1, norm=norm))
        self.extra_trans_convs = nn.ModuleList(
            _ConvUnit(self.out_channels, self.out_channels, 2, stride=2, norm=lat_norm, transposed=True)
            for _ in range(self.num_extra_trans_convs))
        self.extra_fpn_convs = nn.ModuleList(
            _ConvUnit(self.out_channels, self.out_channels, 3, padding=1, norm=norm)
            for _ in range(self.num_extra_trans_convs))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: Xavier-uniform convolutions (mmdet's FPN ``init_weights``) and, for the
        transposed convolutions, mmcv ``ConvModule``'s Kaiming-normal (fan-out, ReLU gain), zero biases."""
        for m in self.modules():
            if type(m) is nn.Conv2d:
                nn.init.xavier_uniform_(m.weight)
            elif type(m) is nn.ConvTranspose2d:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                continue
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def out_strides(self, in_strides: Sequence[int]) -> List[int]:
        """Strides of the outputs for backbone maps of strides ``in_strides`` (finest first)."""
        base = [int(in_strides[i]) for i in range(self.start_level, self.end_level + 1)]
        finer = [base[0] >> (k + 1) for k in range(self.num_extra_trans_convs)][::-1]
        coarser = [base[-1] << (k + 1) for k in range(self.num_extra_coarse)]
        return finer + base + coarser

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple:
        if len(feats) != self.num_ins:
            raise ValueError(f"UpsampleFPN expects {self.num_ins} input maps (in_channels={self.in_channels}), "
                             f"got {len(feats)}.")
        return tuple(self.pyramid(list(feats)))

    def pyramid(self, feats: List[torch.Tensor]) -> List[torch.Tensor]:
        """The output maps (finest first) of the backbone maps ``feats`` (what ``forward`` returns, as a list;
        written for TorchScript: modules are iterated, never indexed by a variable)."""
        laterals: List[torch.Tensor] = []
        for i, conv in enumerate(self.lateral_convs):
            laterals.append(conv(feats[self.start_level + i]))
        for i in range(len(laterals) - 1, 0, -1):
            size = [laterals[i - 1].shape[-2], laterals[i - 1].shape[-1]]
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=size, mode=self.upsample_mode)
        finer: List[torch.Tensor] = []
        prev = laterals[0]
        for trans in self.extra_trans_convs:
            prev = trans(prev)
            finer.insert(0, prev)
        outs: List[torch.Tensor] = []
        for i, conv in enumerate(self.fpn_convs):
            if i < self.num_levels:
                outs.append(conv(laterals[i]))
            elif i == self.num_levels:  # the first extra conv (add_extra_convs)
                if self._extra_source == "on_input":
                    src = feats[self.end_level]
                elif self._extra_source == "on_lateral":
                    src = laterals[-1]
                else:
                    src = outs[-1]
                outs.append(conv(src))
            else:
                outs.append(conv(F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]))
        if self.num_extra_coarse and not self._extra_source:
            for _ in range(self.num_extra_coarse):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        # output conv k belongs to the k-th finest level (the official pairing: the first transposed conv feeds the
        # last output conv)
        finer_outs: List[torch.Tensor] = []
        for k, conv in enumerate(self.extra_fpn_convs):
            finer_outs.append(conv(finer[k]))
        return finer_outs + outs
