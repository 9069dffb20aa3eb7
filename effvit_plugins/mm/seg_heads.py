"""mmseg decode head for the official EfficientViT SegHead."""
from __future__ import annotations

from typing import Optional, Sequence

from mmseg.models.decode_heads.decode_head import BaseDecodeHead

from ..models.efficientvit_mit import SegHeadCore, seg_head_features
from .register import register_model


@register_model("mmseg")
class EfficientViTMITSegHead(BaseDecodeHead):
    """EfficientViT (MIT) SegHead as an mmseg decode head.

    The backbone's stride-8/16/32 maps (stages 2, 3, 4) are projected to ``head_width``, upsampled (bicubic) to
    the stride-8 size and summed; ``head_depth`` residual MBConv (``middle_op='mbconv'``) or FusedMBConv
    (``'fmbconv'``) blocks follow, then an optional 1x1 expansion (``final_expand``) and ``conv_seg``.
    Parameter names match the official checkpoints after ``tools/convert_checkpoint.py``.

    Args:
        in_channels (Sequence[int]): channels of the selected inputs, in ``in_index`` order.
        in_index (Sequence[int]): indices into the backbone outputs, coarsest first, e.g. ``[2, 1, 0]`` for a
            backbone with ``out_indices=(2, 3, 4)``.
        head_width (int), head_depth (int), expand_ratio (float), middle_op (str), final_expand (float | None):
            the official SegHead settings (see ``SEG_HEAD_SETTINGS`` in ``effvit_plugins.models.efficientvit_mit``).
        act (str): 'hswish' (B series) or 'gelu' (L series). norm_eps (float): 1e-5 (B) or 1e-7 (L).
        upsample_mode (str): interpolation of the coarse maps (official: 'bicubic').
        **kwargs: the usual :class:`BaseDecodeHead` arguments (``num_classes``, ``loss_decode``, ``align_corners``,
            ``dropout_ratio`` (default 0, as the official head), ...). ``channels`` and ``input_transform`` follow
            from the SegHead settings (``head_width * final_expand`` and ``'multiple_select'``); giving other
            values is an error.
    """

    def __init__(self, in_channels: Sequence[int], in_index: Sequence[int], head_width: int, head_depth: int,
                 expand_ratio: float, middle_op: str, final_expand: Optional[float], act: str = "hswish",
                 norm_eps: float = 1e-5, upsample_mode: str = "bicubic", dropout_ratio: float = 0.0, **kwargs):
        channels = int(head_width * (final_expand or 1))
        given = {k: kwargs.pop(k) for k in ("channels", "input_transform") if k in kwargs}
        expected = dict(channels=channels, input_transform="multiple_select")
        wrong = {k: v for k, v in given.items() if v != expected[k]}
        if wrong:
            raise ValueError(
                f"EfficientViTMITSegHead: {', '.join(f'{k}={v!r}' for k, v in wrong.items())} cannot be used; the "
                f"SegHead fixes channels=head_width*final_expand={channels} (the width fed to conv_seg) and "
                f"input_transform='multiple_select' (it fuses the in_index maps itself). Remove these keys, or "
                f"change head_width/final_expand.")
        super().__init__(in_channels=list(in_channels), channels=channels, in_index=list(in_index),
                         input_transform="multiple_select", dropout_ratio=dropout_ratio, **kwargs)
        core = SegHeadCore(in_channels, head_width, head_depth, expand_ratio, middle_op, final_expand, act,
                           norm_eps, upsample_mode)
        self.input_ops, self.upsample, self.middle, self.final_expand = (
            core.input_ops, core.upsample, core.middle, core.final_expand)

    def forward(self, inputs):
        return self.cls_seg(seg_head_features(self, self._transform_inputs(inputs)))
