"""Detector post-processing as exportable PyTorch (framework-free): box decoding, score thresholding, top-k,
per-class NMS and RoI feature extraction, written so that ``torch.onnx.export`` (TorchScript exporter, opset >= 16)
turns them into plain ONNX operators (``NonMaxSuppression``, ``RoiAlign``, ``TopK``, ``NonZero``, ``Gather``) that
onnxruntime runs.

The steps compute what mmdet 3.x computes at test time (``DeltaXYWHBBoxCoder``, ``filter_scores_and_topk``,
``batched_nms``, ``multiclass_nms``, ``SingleRoIExtractor``); the OpenMMLab-specific assembly (which heads, which
test_cfg) is :mod:`effvit_plugins.mm.deploy`. Everything works on one image: the graph is exported for batch 1 at
a fixed input size (anchors are constants of that size).

Graph inputs besides the image: ``img_shape`` ``(2,)`` float32 -- height and width of the resized image inside the
padded input (boxes are clipped to it, as mmdet clips to ``img_shape``) -- and ``scale_factor`` ``(2,)`` float32 --
the resize factors ``(w_scale, h_scale)`` from the original image (boxes are divided by them).
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor


def decode_deltas(anchors: Tensor, deltas: Tensor, means: Sequence[float], stds: Sequence[float],
                  img_shape: Tensor, wh_ratio_clip: float = 16 / 1000) -> Tensor:
    """(x, y, w, h) deltas relative to ``anchors`` ``(n, 4)`` -> boxes ``(n, 4)`` x1y1x2y2, clipped to
    ``img_shape`` = (height, width). ``deltas`` may hold several boxes per anchor: ``(n, 4k)`` -> ``(n, 4k)``."""
    # strided slices, no Reshape: a level without candidates has n = 0, where a reshape to (n, -1, 4) is ambiguous
    # (PyTorch and onnxruntime both refuse it) -- a RetinaNet image with nothing above score_thr on one level
    dx, dy, dw, dh = (deltas[:, i::4] * float(stds[i]) + float(means[i]) for i in range(4))  # each (n, k)
    a = anchors[:, :, None]  # (n, 4, 1)
    limit = abs(math.log(wh_ratio_clip))
    dw = dw.clamp(-limit, limit)
    dh = dh.clamp(-limit, limit)
    pw = a[:, 2] - a[:, 0]
    ph = a[:, 3] - a[:, 1]
    cx = (a[:, 0] + a[:, 2]) * 0.5 + pw * dx
    cy = (a[:, 1] + a[:, 3]) * 0.5 + ph * dy
    half_w = pw * dw.exp() * 0.5
    half_h = ph * dh.exp() * 0.5
    zero = deltas.new_zeros(())
    x1 = torch.minimum((cx - half_w).clamp_min(zero), img_shape[1])
    y1 = torch.minimum((cy - half_h).clamp_min(zero), img_shape[0])
    x2 = torch.minimum((cx + half_w).clamp_min(zero), img_shape[1])
    y2 = torch.minimum((cy + half_h).clamp_min(zero), img_shape[0])
    return torch.stack([x1, y1, x2, y2], dim=-1).flatten(1)  # (n, k, 4) -> (n, 4k)


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """Indices of the boxes kept by NMS run separately within each group (class or level), by decreasing score.

    The groups are separated by shifting each group's boxes by ``group * (max coordinate + 1)``, so one
    ``NonMaxSuppression`` node does every group (mmdet's ``batched_nms`` does the same below 10000 boxes)."""
    from torchvision.ops import nms

    top = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()  # no ReduceMax of an empty tensor
    shifted = boxes + (groups.to(boxes.dtype) * (top + 1))[:, None]
    return nms(shifted, scores, float(iou_threshold))


def positive_size(boxes: Tensor, min_size: float = 0.0) -> Tensor:
    """Mask of the boxes wider and taller than ``min_size``."""
    return ((boxes[:, 2] - boxes[:, 0]) > min_size) & ((boxes[:, 3] - boxes[:, 1]) > min_size)


class DenseDetectionPostProcess(nn.Module):
    """A one-stage head's outputs -> detections (RetinaNet and other anchor heads with sigmoid scores).

    Per level: sigmoid scores of every (anchor, class), those above ``score_thr``, the ``nms_pre`` best of them;
    their anchors' deltas decoded and clipped; all levels: boxes divided by ``scale_factor``, boxes of zero (or
    ``min_bbox_size``) width/height dropped, NMS per class, the ``max_per_img`` best.
    """

    def __init__(self, anchors: Sequence[Tensor], num_classes: int, means, stds, score_thr: float, nms_pre: int,
                 iou_threshold: float, max_per_img: int, min_bbox_size: float = -1.0,
                 wh_ratio_clip: float = 16 / 1000):
        super().__init__()
        for i, a in enumerate(anchors):
            self.register_buffer(f"anchors{i}", a.float().clone(), persistent=False)
        self.num_levels = len(anchors)
        self.num_classes = int(num_classes)
        self.means, self.stds = [float(v) for v in means], [float(v) for v in stds]
        self.score_thr, self.nms_pre = float(score_thr), int(nms_pre)
        self.iou_threshold, self.max_per_img = float(iou_threshold), int(max_per_img)
        self.min_bbox_size, self.wh_ratio_clip = float(min_bbox_size), float(wh_ratio_clip)

    def forward(self, cls_scores: List[Tensor], bbox_preds: List[Tensor], img_shape: Tensor,
                scale_factor: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        boxes, scores, labels = [], [], []
        for i in range(self.num_levels):
            anchors = getattr(self, f"anchors{i}")
            s = cls_scores[i][0].permute(1, 2, 0).reshape(-1, self.num_classes).sigmoid()
            d = bbox_preds[i][0].permute(1, 2, 0).reshape(-1, 4)
            cand = torch.nonzero(s > self.score_thr)  # (k, 2): anchor, class
            cand_scores = s[cand[:, 0], cand[:, 1]]
            order = torch.argsort(cand_scores, descending=True)
            if self.nms_pre > 0:
                order = order[:self.nms_pre]
            cand = cand[order]
            anchor_idx = cand[:, 0]
            boxes.append(decode_deltas(anchors[anchor_idx], d[anchor_idx], self.means, self.stds, img_shape,
                                       self.wh_ratio_clip))
            scores.append(cand_scores[order])
            labels.append(cand[:, 1])
        boxes = torch.cat(boxes) / scale_factor.repeat(2)
        scores, labels = torch.cat(scores), torch.cat(labels)
        if self.min_bbox_size >= 0:
            keep = torch.nonzero(positive_size(boxes, self.min_bbox_size)).reshape(-1)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.iou_threshold)[:self.max_per_img]
        return boxes[keep], scores[keep], labels[keep]


class RPNProposals(nn.Module):
    """An RPN's outputs -> proposals ``(n, 4)`` in input coordinates (mmdet's ``RPNHead`` at test time): per level
    the ``nms_pre`` best anchors by sigmoid objectness, decoded and clipped; boxes of zero (or ``min_bbox_size``)
    size dropped; NMS per level; the ``max_per_img`` best."""

    def __init__(self, anchors: Sequence[Tensor], means, stds, nms_pre: int, iou_threshold: float,
                 max_per_img: int, min_bbox_size: float = -1.0, wh_ratio_clip: float = 16 / 1000):
        super().__init__()
        for i, a in enumerate(anchors):
            self.register_buffer(f"anchors{i}", a.float().clone(), persistent=False)
        self.num_levels = len(anchors)
        self.means, self.stds = [float(v) for v in means], [float(v) for v in stds]
        self.nms_pre, self.iou_threshold, self.max_per_img = int(nms_pre), float(iou_threshold), int(max_per_img)
        self.min_bbox_size, self.wh_ratio_clip = float(min_bbox_size), float(wh_ratio_clip)

    def forward(self, cls_scores: List[Tensor], bbox_preds: List[Tensor], img_shape: Tensor) -> Tensor:
        boxes, scores, levels = [], [], []
        for i in range(self.num_levels):
            anchors = getattr(self, f"anchors{i}")
            s = cls_scores[i][0].permute(1, 2, 0).reshape(-1).sigmoid()
            d = bbox_preds[i][0].permute(1, 2, 0).reshape(-1, 4)
            if 0 < self.nms_pre < s.shape[0]:  # a constant of the export size
                s, idx = torch.topk(s, self.nms_pre)
                d, anchors = d[idx], anchors[idx]
            boxes.append(decode_deltas(anchors, d, self.means, self.stds, img_shape, self.wh_ratio_clip))
            scores.append(s)
            levels.append(torch.full((s.shape[0],), i, dtype=torch.long))
        boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        if self.min_bbox_size >= 0:
            keep = torch.nonzero(positive_size(boxes, self.min_bbox_size)).reshape(-1)
            boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, self.iou_threshold)[:self.max_per_img]
        return boxes[keep]


class RoIFeatures(nn.Module):
    """RoIAlign of each box on the feature level its size maps to (level ``floor(log2(sqrt(area) / finest_scale
    + 1e-6))``, clamped to the levels there are), as mmdet's ``SingleRoIExtractor`` with ``RoIAlign``."""

    def __init__(self, strides: Sequence[int], output_size: int, sampling_ratio: int = 0, aligned: bool = True,
                 finest_scale: int = 56):
        super().__init__()
        self.strides = [int(s) for s in strides]
        self.output_size, self.sampling_ratio = int(output_size), int(sampling_ratio)
        self.aligned, self.finest_scale = bool(aligned), float(finest_scale)

    def forward(self, feats: Sequence[Tensor], boxes: Tensor) -> Tensor:
        from torchvision.ops import roi_align

        n_levels = len(self.strides)
        scale = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
        level = torch.floor(torch.log2(scale / self.finest_scale + 1e-6)).clamp(0, n_levels - 1).long()
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)
        out, order = [], []
        for i, stride in enumerate(self.strides):
            idx = torch.nonzero(level == i).reshape(-1)
            out.append(roi_align(feats[i], rois[idx], self.output_size, 1.0 / stride, self.sampling_ratio,
                                 self.aligned))
            order.append(idx)
        # back to the boxes' order: position j of the concatenation holds box order[j]
        return torch.cat(out)[torch.argsort(torch.cat(order))]


def multiclass_nms(boxes: Tensor, scores: Tensor, score_thr: float, iou_threshold: float,
                   max_num: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-class boxes ``(n, 4 * classes)`` (or shared ``(n, 4)``) and softmax scores ``(n, classes + 1)`` (last
    column: background) -> the ``max_num`` best (box, score, label) above ``score_thr`` after NMS per class."""
    num_classes = scores.shape[1] - 1
    if boxes.shape[1] == 4:  # class-agnostic regression: one box for every class
        boxes = boxes.reshape(boxes.shape[0], 1, 4).expand(-1, num_classes, 4)
    else:
        boxes = boxes.reshape(boxes.shape[0], num_classes, 4)
    cls_scores = scores[:, :num_classes]
    cand = torch.nonzero(cls_scores > score_thr)  # (k, 2): box, class
    cand_boxes = boxes[cand[:, 0], cand[:, 1]]
    cand_scores = cls_scores[cand[:, 0], cand[:, 1]]
    keep = batched_nms(cand_boxes, cand_scores, cand[:, 1], iou_threshold)[:max_num]
    return cand_boxes[keep], cand_scores[keep], cand[keep, 1]
