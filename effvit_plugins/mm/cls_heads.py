"""mmpretrain classification heads: for every model family with an ImageNet head, the class ``spec.head_name``
(``<spec.name>ClsHead``) = :class:`MMClsHeadMixin` + the framework-free head (``spec.cls_head``, official parameter
names) + mmpretrain ``ClsHead`` (loss / predict / accuracy), registered in mmpretrain and our own scope by
:mod:`effvit_plugins.mm.register`. Made by :func:`head_adapter` when the family is registered; attributes of this
module (importable by name, picklable). Used by the ImageNet configs in ``configs/<family>/``."""
from __future__ import annotations

import copy

from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from ..models.spec import FamilySpec
from .register import module_class


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


def head_adapter(spec: FamilySpec) -> type:
    """The mmpretrain head class of ``spec`` (``effvit_plugins.mm.cls_heads.<spec.head_name>``, made once)."""
    if spec.cls_head is None:
        raise ValueError(f"Model family {spec.key!r} has no ImageNet head (FamilySpec.cls_head is None).")
    return module_class(__name__, spec.head_name, (MMClsHeadMixin, spec.cls_head, ClsHead),
                        (spec.cls_head.__doc__ or "") + _DOC)
