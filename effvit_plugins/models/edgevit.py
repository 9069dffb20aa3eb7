"""EdgeViT (Samsung AI Cambridge; Pan et al., ECCV 2022, arXiv 2205.03436): framework-free PyTorch core.

EdgeViT stacks four stages; each stage is a patch embedding (conv k4/s4 for stage 1, k2/s2 afterwards, followed by a
LayerNorm over channels) and a list of local-global-local (LGL) blocks:

* ``LocalAgg`` (stages with ``sr_ratio > 1`` only): depth-wise 3x3 positional conv, then a BatchNorm -> 1x1 ->
  depth-wise 5x5 -> 1x1 branch and a BatchNorm -> 1x1-GELU-1x1 MLP branch, both residual.
* ``SelfAttn``: depth-wise 3x3 positional conv, then pre-LN global *sparse* attention (multi-head softmax attention
  among tokens picked on a grid of stride ``sr_ratio``; the result is spread back to full resolution by a
  depth-wise transposed conv "LocalProp" + LayerNorm, then projected) and a pre-LN token MLP, both residual.

Parameter and buffer names equal the keys of the official implementation (saic-fi/edgevit ``src/edgevit.py``):
``patch_embed{1..4}.{proj,norm}``, ``blocks{i}.{k}.LocalAgg.*``, ``blocks{i}.{k}.SelfAttn.*``. The official final
``norm`` (BatchNorm2d) and ``head`` (Linear) live in :class:`EdgeViTClsHead`, so the ImageNet model
:class:`EdgeViTClassifier` has keys ``backbone.*`` and ``head.{norm,head}.*`` (see
:func:`convert_official_checkpoint`). No official weights were ever released.

Input sizes
-----------
The official code only accepts inputs whose height and width are multiples of 32 (its patch embeddings assert a
fixed image size, and the sub-sampled attention reshapes with ``int(H / sr)`` and up-samples with an exactly fitting
transposed conv). This implementation accepts any size and gives the official result, up to float rounding, whenever
H and W are multiples of 32, because none of the following rules changes anything in that case:

* Patch embeddings zero-pad the bottom/right of their input to a multiple of the patch size before the strided
  conv (as Swin/PVT-style backbones do), so no pixel is dropped and stage ``i`` has
  ``ceil(H / stride_i) x ceil(W / stride_i)`` cells (strides 4, 8, 16, 32): the output grid always covers the image.
* Global sparse attention picks the tokens at rows/columns ``0, sr, 2 sr, ...`` (the official ``AvgPool2d(1, sr)``,
  whose output size is ``ceil(n / sr)``), attends among them, up-samples with the transposed conv to
  ``ceil(n / sr) * sr`` and crops the bottom/right overhang back to ``n``.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import BackboneBase, resolve_arch
from .spec import FamilySpec, Paper, register_family
from .layers import DropPath, LinearMlp, drop_path_rates, scaled_dot_product_attention

FAMILY = "EdgeViT"

# Official variant definitions (src/edgevit.py: edgevit_xxs / edgevit_xs / edgevit_s).
ARCH_SETTINGS: Dict[str, dict] = {
    "xxs": dict(embed_dims=[36, 72, 144, 288], depths=[1, 1, 3, 2], head_dim=36, mlp_ratios=[4, 4, 4, 4],
                sr_ratios=[4, 2, 2, 1]),
    "xs": dict(embed_dims=[48, 96, 240, 384], depths=[1, 1, 3, 1], head_dim=48, mlp_ratios=[4, 4, 4, 4],
               sr_ratios=[4, 2, 2, 1]),
    "s": dict(embed_dims=[48, 96, 240, 384], depths=[1, 2, 5, 3], head_dim=48, mlp_ratios=[4, 4, 4, 4],
              sr_ratios=[4, 2, 2, 1]),
}

# Substrings only EdgeViT's official checkpoints have.
OFFICIAL_KEY_SIGNATURE = ("blocks1.0.SelfAttn.", "SelfAttn.attn.qkv.weight", "patch_embed1.proj.weight")

PATCH_SIZES = (4, 2, 2, 2)


def _tokens_to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, C) -> (B, C, h, w)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class PatchEmbed(nn.Module):
    """Strided conv patch embedding + LayerNorm over channels; pads bottom/right to a multiple of the patch size."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)  # default eps 1e-5, as the official code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        pad_h, pad_w = (-x.shape[-2]) % p, (-x.shape[-1]) % p
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        # LayerNorm over the channel dim in channels-last layout, then back to NCHW (contiguous for the convs).
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class CMlp(nn.Module):
    """Convolutional MLP on NCHW maps: 1x1 conv - GELU - 1x1 conv."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class LocalAgg(nn.Module):
    """Local aggregation: positional DW3x3, BN->1x1->DW5x5->1x1 residual branch, BN->CMlp residual branch."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = CMlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class GlobalSparseAttn(nn.Module):
    """Multi-head softmax attention among sub-sampled tokens, propagated back to full resolution.

    ``forward(x, size, full_size)`` takes the (already normalised) *sub-sampled* tokens ``(B, h*w, C)`` on the
    ``size = (h, w)`` grid and returns ``(B, H*W, C)`` for ``full_size = (H, W)``. With ``sr_ratio == 1`` the grid
    is the full one and this is plain global attention. Sub-sampling happens in the caller, before the pre-norm
    (the norm is per token, so normalising only the picked tokens equals picking normalised tokens, and is cheaper).

    Attention runs through ``F.scaled_dot_product_attention`` (fused kernels on GPU; in an ONNX export the plain
    matmul-softmax formulation, :func:`~effvit_plugins.models.layers.scaled_dot_product_attention`). Note for MAC
    counting: ``FlopCounterMode`` counts it on the meta and CUDA devices but not for the fused CPU kernel, so count on
    ``meta`` (the default of :func:`effvit_plugins.utils.complexity.count_macs`).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, sr_ratio: int = 1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{FAMILY}: dim {dim} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.sr = int(sr_ratio)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if self.sr > 1:
            self.LocalProp = nn.ConvTranspose2d(dim, dim, self.sr, stride=self.sr, groups=dim)
            self.norm = nn.LayerNorm(dim)  # default eps 1e-5, as the official code
        else:
            self.LocalProp = None
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor, size: Tuple[int, int], full_size: Tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], self.scale)
        x = x.transpose(1, 2).reshape(B, N, C)
        if self.LocalProp is not None:
            H, W = full_size
            x = self.LocalProp(_tokens_to_map(x, size[0], size[1]))
            if x.shape[-2] != H or x.shape[-1] != W:
                x = x[:, :, :H, :W]
            x = self.norm(x.flatten(2).transpose(1, 2))
        return self.proj(x)


class SelfAttn(nn.Module):
    """Global block: positional DW3x3, pre-LN global sparse attention and pre-LN MLP (residual), NCHW in/out."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, sr_ratio: int = 1):
        super().__init__()
        self.sr = int(sr_ratio)
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = GlobalSparseAttn(dim, num_heads, qkv_bias=qkv_bias, sr_ratio=sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = LinearMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        H, W = x.shape[-2], x.shape[-1]
        sub = x[:, :, ::self.sr, ::self.sr] if self.sr > 1 else x  # official AvgPool2d(1, sr): ceil(H/sr) rows
        h, w = sub.shape[-2], sub.shape[-1]
        a = self.attn(self.norm1(sub.flatten(2).transpose(1, 2)), (h, w), (H, W))
        t = x.flatten(2).transpose(1, 2)
        t = t + self.drop_path(a)
        t = t + self.drop_path(self.mlp(self.norm2(t)))
        return _tokens_to_map(t, H, W)


class LGLBlock(nn.Module):
    """Local-global-local block: ``LocalAgg`` (only if ``sr_ratio > 1``) then ``SelfAttn``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, sr_ratio: int = 1):
        super().__init__()
        self.LocalAgg = LocalAgg(dim, mlp_ratio, drop_path) if sr_ratio > 1 else nn.Identity()
        self.SelfAttn = SelfAttn(dim, num_heads, mlp_ratio, qkv_bias, drop_path, sr_ratio)

    def forward(self, x):
        return self.SelfAttn(self.LocalAgg(x))


def _init_weights(m: nn.Module) -> None:
    # Official initialisation: truncated-normal(0.02) Linear weights, zero biases; LayerNorm weight 1 / bias 0.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class EdgeViTBackbone(BackboneBase):
    """EdgeViT backbone (XXS / XS / S) returning the stride-4/8/16/32 stage outputs.

    Args:
        arch: ``'xxs'``, ``'xs'``, ``'s'`` (case-insensitive) or a dict with the keys of :data:`ARCH_SETTINGS`.
            Required.
        in_channels: input image channels.
        out_indices: stages whose outputs are returned (0..3, negative allowed), in that order.
        frozen_stages: -1 nothing; 0 the stem (``patch_embed1``); k the stem and stages ``0..k-1`` (stage 0 =
            ``blocks1``, stage ``i > 0`` = ``patch_embed{i+1}`` + ``blocks{i+1}``).
        norm_eval: keep every BatchNorm (LocalAgg norms) in eval mode during training.
        drop_path_rate: stochastic depth, increasing linearly over all blocks (official rule).
        qkv_bias: bias of the attention ``qkv`` projection (True in all official variants).
        with_cp: gradient checkpointing (OpenMMLab's name; the same switch as ``set_grad_checkpointing``): every
            block (and stem / downsampling layer) is recomputed in the backward pass instead of keeping its
            activations -- much less activation memory at large inputs, about one more forward of compute.
            Active only while training with autograd. Default False.

    Any input size works; stage ``i`` has ``ceil(H / s_i) x ceil(W / s_i)`` cells for strides ``s = 4, 8, 16, 32``
    (see the module docstring for the padding/sub-sampling rules; identical to the official model for multiples of 32).
    """

    FAMILY = FAMILY

    def __init__(self, arch=None, in_channels: int = 3, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False, drop_path_rate: float = 0.0,
                 qkv_bias: bool = True, with_cp: bool = False):
        super().__init__()
        cfg = resolve_arch(arch, ARCH_SETTINGS, FAMILY)
        self.arch = arch if isinstance(arch, str) else "custom"
        self.arch_settings = cfg
        dims, depths = list(cfg["embed_dims"]), list(cfg["depths"])
        mlp_ratios, sr_ratios = list(cfg["mlp_ratios"]), list(cfg["sr_ratios"])
        head_dim = cfg["head_dim"]
        n = len(dims)
        if not n == len(depths) == len(mlp_ratios) == len(sr_ratios) or not 1 <= n <= len(PATCH_SIZES):
            raise ValueError(f"{FAMILY}: embed_dims, depths, mlp_ratios and sr_ratios need the same length "
                             f"(1..{len(PATCH_SIZES)}), got {cfg}.")
        strides, s = [], 1
        for p in PATCH_SIZES[:n]:
            s *= p
            strides.append(s)

        dpr = drop_path_rates(drop_path_rate, depths)
        prev = in_channels
        for i in range(n):
            setattr(self, f"patch_embed{i + 1}", PatchEmbed(PATCH_SIZES[i], prev, dims[i]))
            setattr(self, f"blocks{i + 1}", nn.ModuleList([
                LGLBlock(dims[i], dims[i] // head_dim, mlp_ratios[i], qkv_bias, dpr[i][j], sr_ratios[i])
                for j in range(depths[i])]))
            prev = dims[i]
        self.apply(_init_weights)
        self.init_contract(dims, strides, [f"blocks{i + 1}" for i in range(n)], in_channels, out_indices,
                           frozen_stages, norm_eval, with_cp)

    def _stage(self, i: int):
        return getattr(self, f"patch_embed{i + 1}"), getattr(self, f"blocks{i + 1}")

    def stem_modules(self) -> List[nn.Module]:
        return [self.patch_embed1]

    def stage_modules(self) -> List[nn.Module]:
        return [self.blocks1] + [nn.ModuleList(self._stage(i)) for i in range(1, len(self.feature_info))]

    def feature_steps(self):
        return [[embed, *blocks] for embed, blocks in (self._stage(i) for i in range(len(self.feature_info)))]

    def script_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        maps: List[torch.Tensor] = []
        x = self.patch_embed1(x)
        for blk in self.blocks1:
            x = blk(x)
        maps.append(x)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = blk(x)
        maps.append(x)
        x = self.patch_embed3(x)
        for blk in self.blocks3:
            x = blk(x)
        maps.append(x)
        x = self.patch_embed4(x)
        for blk in self.blocks4:
            x = blk(x)
        maps.append(x)
        return maps


class EdgeViTClsHead(nn.Module):
    """Official classification head: BatchNorm2d ``norm`` on the last map, global average pool, Linear ``head``."""

    def __init__(self, in_channels: int, num_classes: int = 1000):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.head = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def forward(self, feats):
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return self.head(self.norm(x).mean((2, 3)))


class EdgeViTClassifier(nn.Module):
    """The official ImageNet EdgeViT (``edgevit_xxs`` / ``edgevit_xs`` / ``edgevit_s``): backbone + head."""

    # official checkpoint names of our keys (our prefix -> theirs; convert_official_checkpoint is the inverse)
    official_key_prefixes = (("backbone.", ""), ("head.", ""))

    def __init__(self, arch=None, num_classes: int = 1000, in_channels: int = 3, drop_path_rate: float = 0.0,
                 **backbone_kwargs):
        super().__init__()
        self.backbone = EdgeViTBackbone(arch, in_channels=in_channels, out_indices=(-1,),
                                        drop_path_rate=drop_path_rate, **backbone_kwargs)
        self.head = EdgeViTClsHead(self.backbone.stage_channels[-1], num_classes)

    def forward(self, x):
        return self.head(self.backbone(x))


def convert_official_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official EdgeViT state dict -> :class:`EdgeViTClassifier` keys.

    ``norm.*`` and ``head.*`` become ``head.norm.*`` / ``head.head.*``; every other key gets ``backbone.``. A dict that
    is already in our layout (has ``backbone.`` keys) is returned unchanged.
    """
    if any(k.startswith("backbone.") for k in state_dict):
        return dict(state_dict)
    out = {}
    for k, v in state_dict.items():
        if k.startswith(("norm.", "head.")):
            out["head." + k] = v
        else:
            out["backbone." + k] = v
    return out


__all__ = [
    "ARCH_SETTINGS", "OFFICIAL_KEY_SIGNATURE", "EdgeViTBackbone", "EdgeViTClsHead", "EdgeViTClassifier",
    "convert_official_checkpoint",
]


SPEC = register_family(FamilySpec(
    key="edgevit", title="EdgeViT", name="EdgeViT", config_folder="edgevit", config_prefix="edgevit",
    backbone=EdgeViTBackbone, cls_head=EdgeViTClsHead, classifier=EdgeViTClassifier,
    arch_settings=ARCH_SETTINGS, feature_strides=(4, 8, 16, 32),
    convert=convert_official_checkpoint, key_signature=OFFICIAL_KEY_SIGNATURE,
    imagenet_weights=None,  # no official weights were released
    dense_norm_eval=True, det_variant="xs", cls_crop_pct=0.875,
    paper=Paper(authors="Pan et al.", venue="ECCV 2022", arxiv="2205.03436",
                title="EdgeViTs: Competing Light-weight CNNs on Mobile Devices with Vision Transformers",
                code="saic-fi/edgevit"),
    architecture=("Local-Global-Local Attention", "Sparse Attention", "Depthwise Convolution"),
))
