"""OpenMMLab necks: the EfficientViT-MSRA upsampling FPN (:class:`effvit_plugins.models.upsample_fpn.UpsampleFPN`)
with mmengine's ``init_cfg`` and mmdet/mmseg-style arguments."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from mmengine.model import BaseModule

from ..models.upsample_fpn import UpsampleFPN
from .register import register_model


def _norm_name(norm_cfg: Optional[dict]) -> Optional[str]:
    if norm_cfg is None:
        return None
    kind = norm_cfg.get("type")
    if kind not in ("BN", "SyncBN", "GN"):
        raise ValueError(f"EfficientViTMSRAFPN: norm_cfg type must be 'BN', 'SyncBN' or 'GN' (GroupNorm with 32 "
                         f"groups), got {norm_cfg!r}.")
    if kind == "GN" and norm_cfg.get("num_groups", 32) != 32:
        raise ValueError("EfficientViTMSRAFPN: only num_groups=32 is supported for GN.")
    return kind


@register_model("mmdet", "mmseg")
class EfficientViTMSRAFPN(UpsampleFPN, BaseModule):
    """FPN + transposed-conv finer levels for EfficientViT-MSRA (strides 16/32/64 -> 4/8/...), official behaviour
    and parameter names (``EfficientViTFPN`` of microsoft/Cream); checkpoints of the official detectors load.

    Args:
        in_channels (list[int]): backbone channels, e.g. ``[128, 256, 384]`` for M4.
        out_channels (int): channels of every level (official: 256).
        num_outs (int): levels in total. Official: 5.
        start_level (int), end_level (int): backbone levels used (end inclusive, -1 = last).
        add_extra_convs (bool | str): coarser levels by stride-2 convs (``'on_input'`` for RetinaNet, as
            officially) instead of max pooling.
        relu_before_extra_convs (bool), no_norm_on_lateral (bool): as mmdet's FPN.
        num_extra_trans_convs (int): finer levels from 2x2 stride-2 transposed convs (official: 1 for RetinaNet,
            strides 8-128; 2 for Mask R-CNN, strides 4-64).
        norm_cfg (dict, optional): ``None`` (official), ``dict(type='BN'|'SyncBN'|'GN')``.
        upsample_cfg (dict): top-down interpolation, default ``dict(mode='nearest')``.
        init_cfg (dict, optional): mmengine initialisation; the default is Xavier-uniform on the convolutions.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int, start_level: int = 0,
                 end_level: int = -1, add_extra_convs: Union[bool, str] = False,
                 relu_before_extra_convs: bool = False, no_norm_on_lateral: bool = False,
                 num_extra_trans_convs: int = 0, norm_cfg: Optional[dict] = None,
                 upsample_cfg: dict = dict(mode="nearest"), init_cfg: Optional[dict] = None):
        extra = set(upsample_cfg) - {"mode"}
        if extra:
            raise ValueError(f"EfficientViTMSRAFPN: upsample_cfg only takes 'mode', got {sorted(extra)}.")
        # UpsampleFPN's nn.Module initialisation runs through BaseModule (MRO); init_cfg is set afterwards
        UpsampleFPN.__init__(self, in_channels, out_channels, num_outs, start_level=start_level,
                             end_level=end_level, add_extra_convs=add_extra_convs,
                             relu_before_extra_convs=relu_before_extra_convs,
                             num_extra_trans_convs=num_extra_trans_convs, norm=_norm_name(norm_cfg),
                             no_norm_on_lateral=no_norm_on_lateral,
                             upsample_mode=upsample_cfg.get("mode", "nearest"))
        self.init_cfg = init_cfg

    def init_weights(self):
        if self.init_cfg is None:
            self.reset_parameters()
            self._is_init = True
        else:
            BaseModule.init_weights(self)
