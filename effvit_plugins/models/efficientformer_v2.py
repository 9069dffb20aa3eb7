"""EfficientFormer V2 (Snap Research; Li et al., ICCV 2023, arXiv 2212.08059): S0, S1, S2, L in plain PyTorch.

Module and parameter names follow the official repository (``snap-research/EfficientFormer``,
``models/efficientformer_v2.py``; dense prediction: ``detection/backbonev2.py``, ``segmentation/backbonev2.py``):
``patch_embed.{0,1,3,4}`` (stem), ``network.{0,2,4,6}`` (stages) and ``network.{1,3,5}`` (downsampling), and
``norm`` / ``head`` / ``dist_head`` for the classifier.

Structure: FFN blocks (1x1 conv -> depth-wise 3x3 -> 1x1 conv MLP with per-block expansion ratios) everywhere,
except the last ``vit_num`` blocks of stages 3 and 4, which add ``Attention4D`` (attention on NCHW maps with talking
heads and a local value branch; in stage 3 on a stride-2 reduced map). The downsampling into stage 4 adds an
attention branch (``Attention4DDownsample``: queries on the stride-2 grid attend to all keys).

Differences from the official classification code, all needed for dense prediction:

* every stage output is returned; any input size works (strided layers round up; the output of the stride-2
  attention is upsampled x2 and cropped back to its input size);
* attention biases: the ImageNet tables are learned for 224x224 inputs; at other sizes the expanded map is resized
  bicubically to the actual attention size (the official dense rule). With ``seg_resolution=R`` (pixels) the
  attention layers own the official dense tables ``attention_biases_seg`` built for an R x R input (official:
  800 for detection, 512 for segmentation), trained from scratch downstream; the ImageNet tables are then not used.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import BackboneBase, resolve_arch
from .spec import FamilySpec, Paper, Recipe, register_family
from .efficientformer_v1 import (DistilledClsHead, _drop_path, convert_official_checkpoint,  # noqa: F401
                                 infer_arch as _infer_arch)
from .layers import (ConvNormAct, RelPosBias, biased_attention, conv_bn, drop_path_rates,
                     resize_bias_tables_on_load, stem_conv_bn_act)

__all__ = [
    "ARCH_SETTINGS", "OFFICIAL_KEY_SIGNATURE", "EfficientFormerV2Backbone", "EfficientFormerV2ClsHead",
    "EfficientFormerV2Classifier", "convert_official_checkpoint", "infer_arch",
]

FAMILY = "EfficientFormer-V2"

ARCH_SETTINGS: Dict[str, dict] = {
    "s0": dict(embed_dims=(32, 48, 96, 176), depths=(2, 2, 6, 4), vit_num=2,
               mlp_ratios=((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4))),
    "s1": dict(embed_dims=(32, 48, 120, 224), depths=(3, 3, 9, 6), vit_num=2,
               mlp_ratios=((4, 4, 4), (4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4))),
    "s2": dict(embed_dims=(32, 64, 144, 288), depths=(4, 4, 12, 8), vit_num=4,
               mlp_ratios=((4, 4, 4, 4), (4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                           (4, 4, 3, 3, 3, 3, 4, 4))),
    "l": dict(embed_dims=(40, 80, 192, 384), depths=(5, 5, 15, 10), vit_num=6,
              mlp_ratios=((4, 4, 4, 4, 4), (4, 4, 4, 4, 4), (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                          (4, 4, 4, 3, 3, 3, 3, 4, 4, 4))),
}

# Stochastic depth used by the official ImageNet recipes (informative; the backbone default is 0).
OFFICIAL_DROP_PATH = {"s0": 0.0, "s1": 0.0, "s2": 0.02, "l": 0.1}

OFFICIAL_KEY_SIGNATURE = ("network.0.0.mlp.fc1.weight", "layer_scale_2", ".mlp.mid.weight")
UNUSED_ON_LOAD = ("attention_biases",)
NEW_IN_DENSE = ("attention_biases_seg",)


class ConvBN(ConvNormAct):
    """``Conv2d`` (``0``) + ``BatchNorm2d`` (``1``), folded at inference (official ``nn.Sequential`` layout)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2,
                                   groups=groups), nn.BatchNorm2d(out_ch), names=("0", "1", "2"))

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, "1")(getattr(self, "0")(x))


class Attention4D(RelPosBias):
    """Official ``Attention4D``: attention on NCHW maps with talking heads and a local value branch.

    With ``stride=2`` (stage 3) the map is first reduced by a depth-wise stride-2 conv and the result is upsampled
    x2 (bilinear) and cropped to the input size.
    """

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: float = 4,
                 resolution: int = 7, stride: Optional[int] = None, seg: bool = False):
        super().__init__()
        self._init_heads(num_heads, key_dim, attn_ratio)
        nh_kd = key_dim * num_heads
        if stride is not None:
            resolution = math.ceil(resolution / stride)
            self.stride_conv = ConvBN(dim, dim, 3, stride=stride, groups=dim)
        else:
            self.stride_conv = None
        self.stride = stride
        self.resolution = resolution
        self.q = ConvBN(dim, nh_kd)
        self.k = ConvBN(dim, nh_kd)
        self.v = ConvBN(dim, self.dh)
        self.v_local = ConvBN(self.dh, self.dh, 3, groups=self.dh)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(self.dh, dim, 1), nn.BatchNorm2d(dim))
        self._init_bias(num_heads, (resolution, resolution), (resolution, resolution), seg=seg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W = x.shape[0], x.shape[2], x.shape[3]
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        h, w = x.shape[-2], x.shape[-1]
        n = h * w
        q = self.q(x).view(B, self.num_heads, self.key_dim, n).transpose(-2, -1) * self.scale
        k = self.k(x).view(B, self.num_heads, self.key_dim, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.view(B, self.num_heads, self.d, n).transpose(-2, -1)
        attn = torch.matmul(q, k) + self.attention_bias(n, n, q.dtype)
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
        out = torch.matmul(attn, v).transpose(-2, -1).reshape(B, self.dh, h, w) + v_local
        if self.stride_conv is not None and self.stride is not None:
            out = F.interpolate(out, scale_factor=float(self.stride), mode="bilinear", align_corners=False)
            if out.shape[-2] != H or out.shape[-1] != W:
                out = out[..., :H, :W]
        return self.proj(out)


class LocalGlobalQuery(nn.Module):
    """Official ``LGQuery``: stride-2 depth-wise conv + stride-2 subsampling, then 1x1 conv + BN."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim))
        self.proj = ConvBN(in_dim, out_dim)

    def forward(self, x):
        # AvgPool2d(kernel 1, stride 2) == taking every second pixel
        return self.proj(self.local(x) + x[..., ::2, ::2])


class Attention4DDownsample(RelPosBias):
    """Official ``Attention4DDownsample``: queries on the stride-2 grid attend to all keys of the input map."""

    def __init__(self, dim: int, out_dim: int, key_dim: int = 16, num_heads: int = 8, attn_ratio: float = 4,
                 resolution: int = 14, seg: bool = False):
        super().__init__()
        self._init_heads(num_heads, key_dim, attn_ratio)
        nh_kd = key_dim * num_heads
        self.resolution = resolution
        self.resolution2 = math.ceil(resolution / 2)
        self.q = LocalGlobalQuery(dim, nh_kd)
        self.k = ConvBN(dim, nh_kd)
        self.v = ConvBN(dim, self.dh)
        self.v_local = ConvBN(self.dh, self.dh, 3, stride=2, groups=self.dh)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(self.dh, out_dim, 1), nn.BatchNorm2d(out_dim))
        self._init_bias(num_heads, (self.resolution2,) * 2, (resolution, resolution),
                        q_stride=math.ceil(resolution / self.resolution2), seg=seg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W = x.shape[0], x.shape[2], x.shape[3]
        n = H * W
        q = self.q(x)
        h2, w2 = q.shape[-2], q.shape[-1]
        n2 = h2 * w2
        q = q.view(B, self.num_heads, self.key_dim, n2).transpose(-2, -1)
        k = self.k(x).view(B, self.num_heads, self.key_dim, n).transpose(-2, -1)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.view(B, self.num_heads, self.d, n).transpose(-2, -1)
        out = biased_attention(q, k, v, self.attention_bias(n2, n, q.dtype), self.scale)
        out = out.transpose(-2, -1).reshape(B, self.dh, h2, w2) + v_local
        return self.proj(out)


class Mlp(nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # (TorchScript: the BatchNorms as such)
            x = self.act(self.norm1(self.fc1(x)))
            x = self.act(self.mid_norm(self.mid(x)))
            return self.norm2(self.fc2(x))
        return self._forward(x)

    @torch.jit.unused
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(conv_bn(self.fc1, self.norm1, x))
        x = self.act(conv_bn(self.mid, self.mid_norm, x))
        return conv_bn(self.fc2, self.norm2, x)


class FFN(nn.Module):
    """Official ``FFN``: MLP only, layer scale of shape (C, 1, 1)."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0, layer_scale_init_value=1e-5):
        super().__init__()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = _drop_path(drop_path)
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))

    def forward(self, x):
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class AttnFFN(nn.Module):
    """Official ``AttnFFN``: ``Attention4D`` then MLP, each with a (C, 1, 1) layer scale."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0, layer_scale_init_value=1e-5,
                 resolution: int = 7, stride: Optional[int] = None, seg: bool = False):
        super().__init__()
        self.token_mixer = Attention4D(dim, resolution=resolution, stride=stride, seg=seg)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = _drop_path(drop_path)
        self.layer_scale_1 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(x))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class Downsample(nn.Module):
    """Official ``Embedding``: conv3x3 s2 + BN (``proj``/``norm``), or with ``use_attn`` (into the last stage)
    conv3x3 s2 + BN (``conv``/``bn``) plus an ``Attention4DDownsample`` branch (``attn``), summed."""

    def __init__(self, in_ch: int, out_ch: int, use_attn: bool = False, resolution: int = 14, seg: bool = False):
        super().__init__()
        self.use_attn = use_attn
        if use_attn:
            self.attn = Attention4DDownsample(in_ch, out_ch, resolution=resolution, seg=seg)
            self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(out_ch)
        else:
            self.proj = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)
            self.norm = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # (TorchScript: the BatchNorms as such; attributes by literal name)
            if hasattr(self, "attn"):
                return self.attn(x) + self.bn(self.conv(x))
            return self.norm(self.proj(x))
        return self._forward(x)

    @torch.jit.unused
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_attn:
            return self.attn(x) + conv_bn(self.conv, self.bn, x)
        return conv_bn(self.proj, self.norm, x)


def _stage(index: int, dim: int, depth: int, vit_num: int, mlp_ratios: Sequence[float], dpr: Sequence[float],
           layer_scale_init_value, resolution: int, seg: bool) -> nn.Sequential:
    blocks: List[nn.Module] = []
    for j in range(depth):
        if index >= 2 and j > depth - 1 - vit_num:
            blocks.append(AttnFFN(dim, mlp_ratios[j], dpr[j], layer_scale_init_value, resolution,
                                  stride=2 if index == 2 else None, seg=seg))
        else:
            blocks.append(FFN(dim, mlp_ratios[j], dpr[j], layer_scale_init_value))
    return nn.Sequential(*blocks)


class EfficientFormerV2Backbone(BackboneBase):
    """EfficientFormer V2 backbone (``'s0'``, ``'s1'``, ``'s2'``, ``'l'``): NCHW maps at strides 4/8/16/32.

    Args:
        arch: variant name (see :data:`ARCH_SETTINGS`) or a dict with keys embed_dims, depths, vit_num, mlp_ratios.
            Required.
        in_channels: input channels.
        out_indices: stages whose outputs are returned, in this order. Default (0, 1, 2, 3).
        frozen_stages: -1 nothing, 0 the stem (``patch_embed``), k the stem and the first k stages (stage ``i`` =
            its downsampling layer and its blocks).
        norm_eval: keep BatchNorm layers in eval mode while training.
        drop_path_rate: stochastic depth, linearly increasing over all blocks (official ImageNet recipes:
            :data:`OFFICIAL_DROP_PATH`).
        layer_scale_init_value: initial layer scale (official: 1e-5).
        img_size: input size the ImageNet attention-bias tables are defined for (224).
        seg_resolution: build the official dense-prediction tables (``attention_biases_seg``) for an R x R pixel
            input (official: 800 for detection, 512 for segmentation); ``None`` keeps the ImageNet tables.
        channels_last: run channels-last (outputs are returned contiguous NCHW); ``None`` = on the CPU (inference
            and training).
        with_cp: gradient checkpointing (OpenMMLab's name; the same switch as ``set_grad_checkpointing``): every
            block (and stem / downsampling layer) is recomputed in the backward pass instead of keeping its
            activations -- much less activation memory at large inputs, about one more forward of compute.
            Active only while training with autograd. Default False.

    The official dense-prediction V2 backbones add no output norms.
    """

    FAMILY = FAMILY

    def __init__(self, arch=None, in_channels: int = 3, out_indices=(0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, drop_path_rate: float = 0.0, layer_scale_init_value: float = 1e-5,
                 img_size: int = 224, seg_resolution: Optional[int] = None, channels_last: Optional[bool] = None,
                 with_cp: bool = False):
        super().__init__()
        cfg = resolve_arch(arch, ARCH_SETTINGS, FAMILY)
        self.arch = arch if isinstance(arch, str) else "custom"
        self.channels_last = channels_last
        embed_dims, depths = list(cfg["embed_dims"]), list(cfg["depths"])
        mlp_ratios = [list(r) for r in cfg["mlp_ratios"]]
        if not len(embed_dims) == len(depths) == len(mlp_ratios) == 4 or \
                any(len(r) != d for r, d in zip(mlp_ratios, depths)):
            raise ValueError(f"{FAMILY}: a custom arch needs 4 stages and one mlp ratio per block, got {cfg}.")
        vit_num = int(cfg["vit_num"])
        self.img_size = int(img_size)
        if seg_resolution is not None and int(seg_resolution) < 32:
            raise ValueError(f"{FAMILY}: seg_resolution is an input size in pixels (official 800 for detection, "
                             f"512 for segmentation) or None, got {seg_resolution!r}.")
        self.seg_resolution = None if seg_resolution is None else int(seg_resolution)
        seg = self.seg_resolution is not None
        res = self.seg_resolution or self.img_size

        dpr = drop_path_rates(drop_path_rate, depths)
        self.patch_embed = stem_conv_bn_act(in_channels, embed_dims[0], nn.GELU)
        network: List[nn.Module] = []
        for i in range(4):
            if i > 0:
                network.append(Downsample(embed_dims[i - 1], embed_dims[i], use_attn=i >= 3,
                                          resolution=math.ceil(res / 2 ** (i + 1)), seg=seg))
            network.append(_stage(i, embed_dims[i], depths[i], vit_num, mlp_ratios[i], dpr[i],
                                  layer_scale_init_value, math.ceil(res / 2 ** (i + 2)), seg))
        self.network = nn.ModuleList(network)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self._register_load_state_dict_pre_hook(resize_bias_tables_on_load(FAMILY), with_module=True)
        self.init_contract(embed_dims, [4, 8, 16, 32], [f"network.{2 * i}" for i in range(4)], in_channels,
                           out_indices, frozen_stages, norm_eval, with_cp)

    def stem_modules(self) -> List[nn.Module]:
        return [self.patch_embed]

    def stage_modules(self) -> List[nn.Module]:
        return [self.network[0]] + [nn.ModuleList([self.network[2 * i - 1], self.network[2 * i]]) for i in (1, 2, 3)]

    def feature_steps(self):
        return [([self.patch_embed] if i == 0 else [self.network[2 * i - 1]]) + list(self.network[2 * i])
                for i in range(4)]

    def script_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        maps: List[torch.Tensor] = []
        x = self.patch_embed(x)
        for i, layer in enumerate(self.network):  # stage k at 2k, the downsampling before it at 2k - 1
            x = layer(x)
            if i % 2 == 0:
                maps.append(x)
        return maps



class EfficientFormerV2ClsHead(DistilledClsHead):
    """Official V2 classifier: BatchNorm2d, global average, ``head`` + ``dist_head``."""

    def __init__(self, in_channels: int, num_classes: int = 1000, distillation: bool = True):
        super().__init__(nn.BatchNorm2d(in_channels), in_channels, num_classes, distillation)

    def pre_logits(self, feats) -> torch.Tensor:
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return self.norm(x).mean((2, 3))


class EfficientFormerV2Classifier(nn.Module):
    """The official ImageNet model: :class:`EfficientFormerV2Backbone` (last stage) + head."""

    # official checkpoint names of our keys (our prefix -> theirs; convert_official_checkpoint is the inverse)
    official_key_prefixes = (("backbone.", ""), ("head.", ""))

    def __init__(self, arch=None, num_classes: int = 1000, distillation: bool = True, **backbone_kwargs):
        super().__init__()
        backbone_kwargs.setdefault("out_indices", (3,))
        self.backbone = EfficientFormerV2Backbone(arch, **backbone_kwargs)
        self.head = EfficientFormerV2ClsHead(self.backbone.stage_channels[-1], num_classes, distillation)

    def forward(self, x):
        return self.head(self.backbone(x))


def infer_arch(state_dict) -> str:
    """Variant name of an official (or converted) EfficientFormer V2 state dict, from its widths and depths."""
    return _infer_arch(state_dict, ARCH_SETTINGS, FAMILY)


SPEC = register_family(FamilySpec(
    key="efficientformer_v2", title="EfficientFormer V2", name="EfficientFormerV2",
    config_folder="efficientformer", config_prefix="efficientformerv2",
    backbone=EfficientFormerV2Backbone, cls_head=EfficientFormerV2ClsHead, classifier=EfficientFormerV2Classifier,
    arch_settings=ARCH_SETTINGS, feature_strides=(4, 8, 16, 32),
    convert=convert_official_checkpoint, key_signature=OFFICIAL_KEY_SIGNATURE,
    new_in_dense=NEW_IN_DENSE, unused_on_load=UNUSED_ON_LOAD,
    imagenet_weights="eformer_{v}_450.pth",
    # official dense backbones (snap-research/EfficientFormer detection/backbonev2.py, segmentation/backbonev2.py):
    # "_seg" bias tables for the input side in pixels, the ImageNet recipe's stochastic depth, trained BN statistics
    seg_resolution={"det": 800, "seg": 512}, dense_drop_path={v: r for v, r in OFFICIAL_DROP_PATH.items() if r},
    dense_norm_eval=False, det_variant="s2",
    official_recipes={
        "mask-rcnn": Recipe(
            source="snap-research/EfficientFormer detection/configs/mask_rcnn_efficientformerv2_{v}_fpn_1x_coco.py",
            lr=2e-4, weight_decay=0.05, warmup_iters=500, warmup_factor=1e-6,
            results="none published for this variant (the paper's COCO table, in published_results.json, covers "
                    "other variants; snap-research/EfficientFormer detection/README has no results)"),
        "sem-fpn": Recipe(
            source="snap-research/EfficientFormer segmentation/configs/sem_fpn/fpn_efficientformerv2_{v}_ade20k_40k.py",
            lr=2e-4, weight_decay=1e-4, min_lr=1e-6,
            results="none published for this variant and dataset (the paper's ADE20K table is in "
                    "published_results.json; snap-research/EfficientFormer segmentation/README.md has no results)"),
    },
    cls_drop_path={v: r for v, r in OFFICIAL_DROP_PATH.items() if r},
    cls_batch="8xb128", cls_crop_pct=0.95, cls_distillation=True,
    plot_family="EfficientFormer",
    paper=Paper(authors="Li et al.", venue="ICCV 2023", arxiv="2212.08059",
                title="Rethinking Vision Transformers for MobileNet Size and Speed",
                code="snap-research/EfficientFormer"),
    architecture=("MetaFormer", "Depthwise Convolution", "Multi-Head Self-Attention", "LayerScale"),
))
