"""EfficientFormer V1 (Snap Research; Li et al., NeurIPS 2022, arXiv 2206.01191): L1, L3, L7 in plain PyTorch.

Module and parameter names follow the official repository (``snap-research/EfficientFormer``,
``models/efficientformer.py``; dense prediction: ``detection/backbone.py``, ``segmentation/backbone.py``):
``patch_embed.{0,1,3,4}`` for the stem, ``network.{0..6}`` for the four stages (even indices) and the three
downsampling layers between them (odd indices), ``norm0/2/4/6`` for the dense outputs' GroupNorms and ``norm`` /
``head`` / ``dist_head`` for the classifier.

Structure: PoolFormer-style 4D blocks (``Meta4D``: ``AvgPool3x3(x) - x`` token mixer and a 1x1-conv MLP, both with
layer scales) everywhere except the last ``vit_num`` blocks of the last stage, which are pre-norm transformer blocks
(``Meta3D``) on tokens with LeViT-style relative attention biases.

Differences from the official classification code, all needed for dense prediction:

* every stage output is returned as an NCHW map (the last stage works on tokens internally);
* ``GroupNorm(1, C)`` on each returned map (``out_norm``, default on), as the official dense backbones;
* attention biases: the ImageNet tables are learned for 224x224 inputs (7x7 tokens); at other sizes the expanded
  ``(heads, N0, N0)`` map is resized bicubically to the actual attention size (the official dense rule). With
  ``seg_resolution=R`` the attention owns the official dense tables ``attention_biases_seg`` built for an R x R
  token grid instead (official: 25 for detection, 16 for segmentation), trained from scratch downstream; the
  ImageNet tables are then not used (the official dense models keep them only as unused buffers).
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from .base import BackboneBase, resolve_arch
from .spec import FamilySpec, Paper, Recipe, register_family
from .layers import (DropPath, GroupNorm, LinearMlp, RelPosBias, biased_attention, conv_bn, distilled_logits,
                     drop_path_rates, resize_bias_tables_on_load, stem_conv_bn_act)

__all__ = [
    "ARCH_SETTINGS", "OFFICIAL_KEY_SIGNATURE", "OFFICIAL_KEY_EXCLUDE", "EfficientFormerV1Backbone",
    "EfficientFormerV1ClsHead", "EfficientFormerV1Classifier", "convert_official_checkpoint", "infer_arch",
]

FAMILY = "EfficientFormer-V1"

ARCH_SETTINGS: Dict[str, dict] = {
    "l1": dict(embed_dims=(48, 96, 224, 448), depths=(3, 2, 6, 4), vit_num=1),
    "l3": dict(embed_dims=(64, 128, 320, 512), depths=(4, 4, 12, 6), vit_num=4),
    "l7": dict(embed_dims=(96, 192, 384, 768), depths=(6, 6, 18, 8), vit_num=8),
}

# Key fragments of official V1 checkpoints (classification and dense); V2 checkpoints have them too, and are told
# apart by OFFICIAL_KEY_EXCLUDE (V2's depth-wise MLP conv).
OFFICIAL_KEY_SIGNATURE = ("network.0.0.mlp.fc1.weight", "network.1.proj.weight", "layer_scale_2")
OFFICIAL_KEY_EXCLUDE = (".mlp.mid.weight",)

# In a dense model (seg_resolution set) these official-checkpoint keys have no counterpart: the classification
# tables of an ImageNet checkpoint (unused dummies in the official dense code). Their absence from the model is not
# an error; the dense tables they do not provide start from zeros, as officially.
UNUSED_ON_LOAD = ("attention_biases",)
NEW_IN_DENSE = ("attention_biases_seg", "norm0.", "norm2.", "norm4.", "norm6.")

_HEAD_KEYS = ("norm", "head", "dist_head")


class Attention(RelPosBias):
    """Multi-head self-attention on tokens with LeViT-style relative biases (official ``Attention``)."""

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: float = 4,
                 resolution: int = 7, seg: bool = False):
        super().__init__()
        self._init_heads(num_heads, key_dim, attn_ratio)
        self.qkv = nn.Linear(dim, self.dh + 2 * key_dim * num_heads)
        self.proj = nn.Linear(self.dh, dim)
        self._init_bias(num_heads, (resolution, resolution), (resolution, resolution), seg=seg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, N, C)
        B, N = x.shape[0], x.shape[1]
        qkv = self.qkv(x).view(B, N, self.num_heads, -1).transpose(1, 2).split(
            [self.key_dim, self.key_dim, self.d], dim=-1)
        q, k, v = qkv[0], qkv[1], qkv[2]
        x = biased_attention(q, k, v, self.attention_bias(N, N, q.dtype), self.scale)
        return self.proj(x.transpose(1, 2).reshape(B, N, self.dh))


class ConvMlp(nn.Module):
    """1x1 conv -> BN -> GELU -> 1x1 conv -> BN (official ``Mlp``); BNs folded at inference."""

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # (TorchScript: the BatchNorms as such)
            return self.norm2(self.fc2(self.act(self.norm1(self.fc1(x)))))
        return self._forward(x)

    @torch.jit.unused
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_bn(self.fc2, self.norm2, self.act(conv_bn(self.fc1, self.norm1, x)))


class Pooling(nn.Module):
    """Token mixer ``AvgPool3x3(x) - x`` (padding not counted)."""

    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x):
        return self.pool(x) - x


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class Meta4D(nn.Module):
    """Pooling mixer and conv MLP, each with a layer scale of shape (C,)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, layer_scale_init_value=1e-5):
        super().__init__()
        self.token_mixer = Pooling(3)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.drop_path = _drop_path(drop_path)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.token_mixer(x))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(x))


class Meta3D(nn.Module):
    """Pre-norm transformer block on tokens with layer scales."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, layer_scale_init_value=1e-5,
                 resolution: int = 7, seg: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = Attention(dim, resolution=resolution, seg=seg)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LinearMlp(dim, int(dim * mlp_ratio))
        self.drop_path = _drop_path(drop_path)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(self.norm2(x)))


class Flat(nn.Module):
    """(B, C, H, W) -> (B, H*W, C); has no weights but occupies a block index as in the official model."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class Downsample(nn.Module):
    """Official ``Embedding``: conv3x3 stride 2 + BN (keys ``proj`` / ``norm``)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # (TorchScript: the BatchNorm as such)
            return self.norm(self.proj(x))
        return self._forward(x)

    @torch.jit.unused
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_bn(self.proj, self.norm, x)


def _stage(index: int, dim: int, depth: int, vit_num: int, dpr: Sequence[float], layer_scale_init_value,
           resolution: int, num_stages: int, seg: bool) -> nn.Sequential:
    blocks: List[nn.Module] = []
    last = index == num_stages - 1
    n_vit = min(vit_num, depth) if last else 0
    if last and n_vit == depth:
        blocks.append(Flat())
    for j in range(depth):
        if depth - j <= n_vit:
            blocks.append(Meta3D(dim, 4.0, dpr[j], layer_scale_init_value, resolution, seg))
        else:
            blocks.append(Meta4D(dim, 4.0, dpr[j], layer_scale_init_value))
            if n_vit and depth - j - 1 == n_vit:
                blocks.append(Flat())
    return nn.Sequential(*blocks)


class EfficientFormerV1Backbone(BackboneBase):
    """EfficientFormer V1 backbone (``'l1'``, ``'l3'``, ``'l7'``): NCHW maps at strides 4/8/16/32.

    Args:
        arch: variant name (see :data:`ARCH_SETTINGS`) or a dict with keys embed_dims, depths, vit_num. Required.
        in_channels: input channels.
        out_indices: stages whose outputs are returned, in this order. Default (0, 1, 2, 3).
        frozen_stages: -1 nothing, 0 the stem (``patch_embed``), k the stem and the first k stages (stage ``i`` =
            its downsampling layer, its blocks and its output norm).
        norm_eval: keep BatchNorm layers in eval mode while training.
        drop_path_rate: stochastic depth, linearly increasing over all blocks (official ImageNet recipes: 0).
        layer_scale_init_value: initial layer scale (official: 1e-5; the official L7 detection config uses 1e-6).
        out_norm: ``GroupNorm(1, C)`` on each returned map (``norm0/norm2/norm4/norm6``), as the official
            dense-prediction backbones. Default True.
        img_size: input size the ImageNet attention-bias tables are defined for (224).
        seg_resolution: build the official dense-prediction tables (``attention_biases_seg``) for an R x R token
            grid at stride 32 (official: 25 for detection, 16 for segmentation); ``None`` keeps the ImageNet tables.
        channels_last: run channels-last (outputs are returned contiguous NCHW); ``None`` = on the CPU,
            where it is faster (e.g. L1 at 512x512: 217 -> 159 ms on 2 cores; a training step at 224 batch 16:
            1070 -> 803 ms).
        with_cp: gradient checkpointing (OpenMMLab's name; the same switch as ``set_grad_checkpointing``): every
            block (and stem / downsampling layer) is recomputed in the backward pass instead of keeping its
            activations -- much less activation memory at large inputs, about one more forward of compute.
            Active only while training with autograd. Default False.
    """

    FAMILY = FAMILY

    def __init__(self, arch=None, in_channels: int = 3, out_indices=(0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, drop_path_rate: float = 0.0, layer_scale_init_value: float = 1e-5,
                 out_norm: bool = True, img_size: int = 224, seg_resolution: Optional[int] = None,
                 channels_last: Optional[bool] = None, with_cp: bool = False):
        super().__init__()
        cfg = resolve_arch(arch, ARCH_SETTINGS, FAMILY)
        self.arch = arch if isinstance(arch, str) else "custom"
        self.channels_last = channels_last
        embed_dims, depths = list(cfg["embed_dims"]), list(cfg["depths"])
        if len(embed_dims) != len(depths):
            raise ValueError(f"{FAMILY}: embed_dims and depths need the same length, got {cfg}.")
        vit_num = int(cfg["vit_num"])
        self.img_size = int(img_size)
        if seg_resolution is not None and int(seg_resolution) < 1:
            raise ValueError(f"{FAMILY}: seg_resolution must be a positive token-grid side (official 25 for "
                             f"detection, 16 for segmentation) or None, got {seg_resolution!r}.")
        self.seg_resolution = None if seg_resolution is None else int(seg_resolution)
        self.out_norm = bool(out_norm)
        n = len(depths)
        resolution = self.seg_resolution or math.ceil(self.img_size / 32)

        dpr = drop_path_rates(drop_path_rate, depths)
        self.patch_embed = stem_conv_bn_act(in_channels, embed_dims[0], nn.ReLU)
        network: List[nn.Module] = []
        for i in range(n):
            if i > 0:
                network.append(Downsample(embed_dims[i - 1], embed_dims[i]))
            network.append(_stage(i, embed_dims[i], depths[i], vit_num, dpr[i], layer_scale_init_value, resolution,
                                  n, self.seg_resolution is not None))
        self.network = nn.ModuleList(network)
        self._init_linear()
        self._register_load_state_dict_pre_hook(resize_bias_tables_on_load(FAMILY), with_module=True)
        self.init_contract(embed_dims, [2 ** (i + 2) for i in range(n)], [f"network.{2 * i}" for i in range(n)],
                           in_channels, out_indices, frozen_stages, norm_eval, with_cp)
        if self.out_norm:
            for i in self.out_indices:
                self.add_module(f"norm{2 * i}", GroupNorm(1, embed_dims[i]))
            self._freeze_stages()  # the output norms freeze with their stage

    def _init_linear(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def stem_modules(self) -> List[nn.Module]:
        return [self.patch_embed]

    def stage_modules(self) -> List[nn.Module]:
        stages = []
        for i in range((len(self.network) + 1) // 2):
            parts = ([self.network[2 * i - 1]] if i > 0 else []) + [self.network[2 * i]]
            norm = getattr(self, f"norm{2 * i}", None)
            stages.append(nn.ModuleList(parts + ([norm] if norm is not None else [])))
        return stages

    def feature_steps(self):
        n = (len(self.network) + 1) // 2
        return [([self.patch_embed] if i == 0 else [self.network[2 * i - 1]]) + list(self.network[2 * i])
                for i in range(n)]


    def finish_feature(self, index, x, in_shape):
        if x.dim() == 3:  # the attention blocks work on (B, N, C) tokens: back to NCHW
            factor = 4 if index == 0 else 2
            h, w = math.ceil(in_shape[-2] / factor), math.ceil(in_shape[-1] / factor)
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
        return x

    def output_feature(self, index, x):
        return getattr(self, f"norm{2 * index}")(x) if self.out_norm else x

    def script_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        maps: List[torch.Tensor] = []
        x = self.patch_embed(x)
        for i, layer in enumerate(self.network):  # stage k at 2k, the downsampling before it at 2k - 1
            h, w = x.shape[-2], x.shape[-1]
            x = layer(x)
            if i % 2 == 0:
                if x.dim() == 3:  # the attention blocks work on (B, N, C) tokens: back to NCHW (finish_feature)
                    x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
                maps.append(x)
        if self.out_norm:  # (output_feature)
            maps = [self._out_norm(k, m) for k, m in enumerate(maps)]
        return maps

    def _out_norm(self, k: int, x: torch.Tensor) -> torch.Tensor:
        # (attributes by literal name, for TorchScript)
        if k == 0 and hasattr(self, "norm0"):
            return self.norm0(x)
        if k == 1 and hasattr(self, "norm2"):
            return self.norm2(x)
        if k == 2 and hasattr(self, "norm4"):
            return self.norm4(x)
        if k == 3 and hasattr(self, "norm6"):
            return self.norm6(x)
        return x


class DistilledClsHead(nn.Module):
    """The official EfficientFormer classifier (V1 and V2): a final ``norm``, global average, ``head`` and
    ``dist_head`` (averaged in eval mode, returned as a pair in training like the official model). Subclasses give
    the norm and ``pre_logits``."""

    def __init__(self, norm: nn.Module, in_channels: int, num_classes: int = 1000, distillation: bool = True):
        super().__init__()
        self.distillation = distillation
        self.norm = norm
        self.head = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()
        if distillation:
            self.dist_head = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, feats):
        x = self.pre_logits(feats)
        if not self.distillation:
            return self.head(x)
        return distilled_logits(self.head(x), self.dist_head(x), self.training)


class EfficientFormerV1ClsHead(DistilledClsHead):
    """Official V1 classifier: LayerNorm over channels, mean over tokens, ``head`` + ``dist_head``."""

    def __init__(self, in_channels: int, num_classes: int = 1000, distillation: bool = True):
        super().__init__(nn.LayerNorm(in_channels), in_channels, num_classes, distillation)

    def pre_logits(self, feats) -> torch.Tensor:
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return self.norm(x.flatten(2).transpose(1, 2)).mean(1)


class EfficientFormerV1Classifier(nn.Module):
    """The official ImageNet model: :class:`EfficientFormerV1Backbone` (last stage, no output norm) + head."""

    # official checkpoint names of our keys (our prefix -> theirs; convert_official_checkpoint is the inverse)
    official_key_prefixes = (("backbone.", ""), ("head.", ""))

    def __init__(self, arch=None, num_classes: int = 1000, distillation: bool = True, **backbone_kwargs):
        super().__init__()
        backbone_kwargs.setdefault("out_indices", (3,))
        backbone_kwargs.setdefault("out_norm", False)
        self.backbone = EfficientFormerV1Backbone(arch, **backbone_kwargs)
        self.head = EfficientFormerV1ClsHead(self.backbone.stage_channels[-1], num_classes, distillation)

    def forward(self, x):
        return self.head(self.backbone(x))


def convert_official_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official EfficientFormer (V1 or V2) checkpoint (unwrapped) -> our layouts.

    * ImageNet checkpoints: ``norm``/``head``/``dist_head`` go under ``head.``, everything else under
      ``backbone.`` (the classifier / mmpretrain layout).
    * dense-prediction checkpoints (official mmdet/mmseg models: keys already prefixed ``backbone.``, ``neck.``,
      ``rpn_head.``, ``roi_head.``, ``decode_head.`` ...): keys are kept (mmdet 3 / mmseg 1 use the same names) and the
      classification tables the official dense backbones keep as unused buffers are dropped.

    The stored ``attention_bias_idxs[_seg]`` buffers are always dropped (the model rebuilds them, identically).
    """
    sd = dict(state_dict)
    dense = any(k.startswith("backbone.") for k in sd)
    seg_tables = {k[: -len("_seg")] for k in sd if k.endswith("attention_biases_seg")}
    out: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.endswith(("attention_bias_idxs", "attention_bias_idxs_seg")) or k in seg_tables:
            continue
        if dense:
            out[k] = v
        elif k.split(".", 1)[0] in _HEAD_KEYS:
            out["head." + k] = v
        else:
            out["backbone." + k] = v
    return out


def infer_arch(state_dict: Mapping[str, torch.Tensor], arch_settings: Mapping[str, dict] = ARCH_SETTINGS,
               family: str = FAMILY) -> str:
    """Variant name of an official (or converted) EfficientFormer state dict, from its widths and depths."""
    prefix = "backbone." if any(k.startswith("backbone.") for k in state_dict) else ""
    dims, depths = [], []
    for s in range(4):
        stage = re.compile(rf"^{re.escape(prefix)}network\.{2 * s}\.(\d+)\.mlp\.fc2\.weight$")
        blocks = [m for m in (stage.match(k) for k in state_dict) if m]
        if not blocks:
            raise ValueError(f"Not an {family} state dict: no 'network.<stage>.<block>.mlp.fc2' keys found.")
        dims.append(int(state_dict[blocks[0].group(0)].shape[0]))
        depths.append(len(blocks))
    for name, s in arch_settings.items():
        if list(s["embed_dims"]) == dims and list(s["depths"]) == depths:
            return name
    raise ValueError(f"No {family} variant has widths {dims} and depths {depths}. "
                     f"Known variants: {', '.join(arch_settings)}.")


SPEC = register_family(FamilySpec(
    key="efficientformer_v1", title="EfficientFormer V1", name="EfficientFormerV1",
    config_folder="efficientformer", config_prefix="efficientformer",
    backbone=EfficientFormerV1Backbone, cls_head=EfficientFormerV1ClsHead, classifier=EfficientFormerV1Classifier,
    arch_settings=ARCH_SETTINGS, feature_strides=(4, 8, 16, 32),
    convert=convert_official_checkpoint, key_signature=OFFICIAL_KEY_SIGNATURE, key_exclude=OFFICIAL_KEY_EXCLUDE,
    new_in_dense=NEW_IN_DENSE, unused_on_load=UNUSED_ON_LOAD,
    imagenet_weights="efficientformer_{v}_300d.pth",
    # official dense backbones (snap-research/EfficientFormer detection/backbone.py, segmentation/backbone.py):
    # "_seg" bias tables for the stride-32 token grid side, trained BatchNorm statistics, L7's detection layer scale
    seg_resolution={"det": 25, "seg": 16}, dense_layer_scale={"l7": 1e-6}, dense_norm_eval=False,
    det_variant="l1",
    official_recipes={
        "mask-rcnn": Recipe(
            source="snap-research/EfficientFormer detection/configs/mask_rcnn_efficientformer_{v}_fpn_1x_coco.py",
            lr=2e-4, weight_decay=1e-4, warmup_iters=500, warmup_factor=1e-6,
            results="none published for this variant (the paper's COCO table, in published_results.json, covers "
                    "other variants; snap-research/EfficientFormer detection/README has no results)"),
        "sem-fpn": Recipe(
            source="snap-research/EfficientFormer segmentation/configs/sem_fpn/fpn_efficientformer_{v}_ade20k_40k.py",
            lr=2e-4, weight_decay=1e-4,
            results="none published for this variant and dataset (the paper's ADE20K table is in "
                    "published_results.json; snap-research/EfficientFormer segmentation/README.md has no results)"),
    },
    cls_backbone_kwargs=dict(out_norm=False),  # the classifier has its own final norm
    cls_batch="8xb128", cls_crop_pct=0.95, cls_distillation=True,
    plot_family="EfficientFormer",
    paper=Paper(authors="Li et al.", venue="NeurIPS 2022", arxiv="2206.01191",
                title="EfficientFormer: Vision Transformers at MobileNet Speed",
                code="snap-research/EfficientFormer"),
    architecture=("MetaFormer", "Pooling", "1x1 Convolution", "LayerScale"),
))
