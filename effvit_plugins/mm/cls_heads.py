"""mmpretrain classification heads: our framework-free heads (official parameter names) + mmpretrain ``ClsHead``
(loss / predict / accuracy). Used by the ImageNet configs in ``configs/<family>/``."""
from __future__ import annotations

import copy

from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS as PRETRAIN_MODELS


def make_cls_head_adapter(core_cls, name: str):
    """``name`` = ``core_cls`` (``forward(feats) -> logits``) + mmpretrain ``ClsHead``."""

    def __init__(self, *args, loss=dict(type="CrossEntropyLoss", loss_weight=1.0), topk=(1,), cal_acc=False,
                 init_cfg=None, **kwargs):
        core_cls.__init__(self, *args, **kwargs)
        self.topk = (topk,) if isinstance(topk, int) else tuple(topk)
        self.cal_acc = cal_acc
        self.loss_module = loss if not isinstance(loss, dict) else PRETRAIN_MODELS.build(loss)
        self.init_cfg = copy.deepcopy(init_cfg)
        self._is_init = False

    def forward(self, feats):
        return core_cls.forward(self, feats)

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

    doc = (core_cls.__doc__ or "") + "\n    mmpretrain arguments: ``loss``, ``topk``, ``cal_acc``, ``init_cfg``.\n"
    return type(name, (core_cls, ClsHead), {"__init__": __init__, "forward": forward, "loss": loss, "__doc__": doc,
                                            "__module__": __name__})
