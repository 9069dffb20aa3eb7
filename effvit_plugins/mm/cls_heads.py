"""mmpretrain classification heads: our framework-free heads (official parameter names) + mmpretrain ``ClsHead``
(loss / predict / accuracy). Used by the ImageNet configs in ``configs/<family>/``."""
from __future__ import annotations

import copy

from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from ..models import edgevit, efficientformer_v1, efficientformer_v2, efficientvit_mit, efficientvit_msra
from .register import register_model


class MMClsHeadMixin:
    """Shared by every head adapter: mmpretrain's ``loss`` / ``topk`` / ``cal_acc`` / ``init_cfg`` arguments on top of
    the core head, and a loss that also handles the distillation heads."""

    def __init__(self, *args, loss=dict(type="CrossEntropyLoss", loss_weight=1.0), topk=(1,), cal_acc=False,
                 init_cfg=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.topk = (topk,) if isinstance(topk, int) else tuple(topk)
        self.cal_acc = cal_acc
        self.loss_module = loss if not isinstance(loss, dict) else PRETRAIN_MODELS.build(loss)
        self.init_cfg = copy.deepcopy(init_cfg)
        self._is_init = False

    def loss(self, feats, data_samples, **kwargs):
        """Cross-entropy on the logits; a head with a distillation branch returns two logits while training
        (official behaviour). Without a teacher both branches learn the labels and their losses are averaged."""
        scores = self(feats)
        if not isinstance(scores, (tuple, list)):
            return self._get_loss(scores, data_samples, **kwargs)
        parts = [self._get_loss(s, data_samples, **kwargs) for s in scores]
        losses = dict(parts[0])
        losses["loss"] = sum(p["loss"] for p in parts) / len(parts)
        return losses


_DOC = "\n    mmpretrain arguments: ``loss``, ``topk``, ``cal_acc``, ``init_cfg``.\n"


@register_model("mmpretrain")
class EfficientViTMITClsHead(MMClsHeadMixin, efficientvit_mit.EfficientViTMITClsHead, ClsHead):
    __doc__ = efficientvit_mit.EfficientViTMITClsHead.__doc__ + _DOC


@register_model("mmpretrain")
class EfficientViTMSRAClsHead(MMClsHeadMixin, efficientvit_msra.EfficientViTMSRAClsHead, ClsHead):
    __doc__ = efficientvit_msra.EfficientViTMSRAClsHead.__doc__ + _DOC


@register_model("mmpretrain")
class EdgeViTClsHead(MMClsHeadMixin, edgevit.EdgeViTClsHead, ClsHead):
    __doc__ = edgevit.EdgeViTClsHead.__doc__ + _DOC


@register_model("mmpretrain")
class EfficientFormerV1ClsHead(MMClsHeadMixin, efficientformer_v1.EfficientFormerV1ClsHead, ClsHead):
    __doc__ = efficientformer_v1.EfficientFormerV1ClsHead.__doc__ + _DOC


@register_model("mmpretrain")
class EfficientFormerV2ClsHead(MMClsHeadMixin, efficientformer_v2.EfficientFormerV2ClsHead, ClsHead):
    __doc__ = efficientformer_v2.EfficientFormerV2ClsHead.__doc__ + _DOC
