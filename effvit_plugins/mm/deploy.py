"""What ``tools/deploy/export_onnx.py`` exports from a config: plain ``nn.Module`` views of an OpenMMLab model.

The OpenMMLab-specific part of deployment; the export itself (framework-free) is :mod:`effvit_plugins.deploy`.

* :class:`ClassifierLogits` -- an mmpretrain ``ImageClassifier``: logits ``(N, classes)``.
* :class:`SegmentorLogits` -- an mmseg ``EncoderDecoder``: logits resized to the input size ``(N, classes, H, W)``
  (bilinear, the segmentor's ``align_corners``, as mmseg's ``predict`` does before the arg-max).
* :class:`Features` -- the backbone's multi-scale maps (then the neck, when the config has one).
* :class:`DetectorExport` -- an mmdet RetinaNet or Mask R-CNN (any ``SingleStageDetector`` with a
  ``RetinaHead``-like anchor head, or a ``TwoStageDetector`` with an RPN and a ``StandardRoIHead``) including its
  test-time post-processing: inputs ``input`` (1, 3, H, W), ``img_shape`` and ``scale_factor``; outputs ``boxes``
  (n, 4) in original-image coordinates, ``scores`` (n,), ``labels`` (n,) and, with a mask head, ``masks``
  (n, 28, 28) -- each detection's mask probabilities in its box, pasted by
  :func:`effvit_plugins.deploy.runtime.paste_masks`.
* :class:`SegmentorLabels` -- an mmseg segmentor with the arg-max in the graph: inputs ``input``, ``img_shape`` and
  ``ori_shape``, output ``labels`` (1, h, w) at the original image size (logits resized to it, then arg-max, as
  mmseg).

Inputs are preprocessed images ``(N, 3, H, W)`` float32: RGB, normalised with the ``data_preprocessor``'s
mean/std (:func:`preprocessing` reads them from the config).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..deploy.rewrites import exporting_fixed_size


class ClassifierLogits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x, mode="tensor")
        return out[0] if isinstance(out, (tuple, list)) else out


class SegmentorLogits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.align_corners = bool(getattr(model, "align_corners", False))

    def forward(self, x):
        logits = self.model(x, mode="tensor")
        if exporting_fixed_size():
            # a Reshape between the classifier conv and the Resize keeps onnxruntime from running this Resize in its
            # blocked NCHWc layout and then reordering the full-size logits on one thread (about 60 ms at 1024x2048)
            n, c, h, w = logits.shape
            logits = logits.reshape(n, c * h, w).reshape(n, c, h, w)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)


class Features(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.neck = getattr(model, "neck", None)

    def forward(self, x):
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        return tuple(feats)


class SegmentorLabels(nn.Module):
    """Per-pixel class indices at the original image size, as mmseg's ``inference_model``: logits resized to the
    input size, the padding cropped (``img_shape``: int64 (2,) height, width of the image inside the input), resized
    to ``ori_shape`` (int64 (2,)), arg-max. Both sizes are graph inputs: the output size is not fixed."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.align_corners = bool(getattr(model, "align_corners", False))

    def forward(self, x, img_shape, ori_shape):
        logits = self.model(x, mode="tensor")
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        logits = logits[:, :, :img_shape[0], :img_shape[1]]
        logits = F.interpolate(logits, size=(ori_shape[0], ori_shape[1]), mode="bilinear",
                               align_corners=self.align_corners)
        return logits.argmax(dim=1)


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"this detector cannot be exported with its post-processing: {what}. Supported: RetinaNet-"
                         f"style anchor heads (sigmoid scores, DeltaXYWHBBoxCoder, nms) and Mask R-CNN / Faster "
                         f"R-CNN with an RPN and a StandardRoIHead (RoIAlign). Export --features instead.")


def _nms_iou(cfg) -> float:
    nms = cfg.get("nms") or {}
    _require(nms.get("type", "nms") == "nms", f"test_cfg nms type {nms.get('type')!r} (only 'nms')")
    return float(nms.get("iou_threshold", 0.5))


def _coder(head):
    coder = head.bbox_coder
    _require(type(coder).__name__ == "DeltaXYWHBBoxCoder" and not getattr(coder, "add_ctr_clamp", False)
             and getattr(coder, "clip_border", True),
             f"box coder {type(coder).__name__} (only DeltaXYWHBBoxCoder with clip_border, without add_ctr_clamp)")
    return dict(means=list(coder.means), stds=list(coder.stds))  # decode's default wh_ratio_clip, as mmdet calls it


def _roi_features(extractor):
    from ..deploy.detectors import RoIFeatures

    layer = extractor.roi_layers[0]
    _require(type(layer).__name__ == "RoIAlign" and getattr(layer, "pool_mode", "avg") == "avg",
             f"RoI layer {type(layer).__name__} (only RoIAlign, avg)")
    size = layer.output_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return RoIFeatures(extractor.featmap_strides, int(size), int(layer.sampling_ratio), bool(layer.aligned),
                       int(extractor.finest_scale))


class DetectorExport(nn.Module):
    """An mmdet detector with its test-time post-processing, for one image at the fixed padded size ``size``
    (anchors are constants of that size): ``(input, img_shape, scale_factor) -> boxes, scores, labels[, masks]``
    (see :mod:`effvit_plugins.deploy.detectors`)."""

    def __init__(self, model: nn.Module, size: Tuple[int, int]):
        super().__init__()
        from ..deploy.detectors import DenseDetectionPostProcess, RPNProposals

        self.detector = model
        with torch.no_grad():
            feats = model.extract_feat(torch.zeros(1, 3, int(size[0]), int(size[1])))
        sizes = [f.shape[-2:] for f in feats]
        self.two_stage = getattr(model, "rpn_head", None) is not None and getattr(model, "roi_head", None) is not None
        self.with_mask = bool(self.two_stage and model.roi_head.with_mask)
        if self.two_stage:
            rpn, roi = model.rpn_head, model.roi_head
            _require(type(roi).__name__ == "StandardRoIHead", f"RoI head {type(roi).__name__}")
            _require(rpn.use_sigmoid_cls, "an RPN with softmax objectness")
            rcfg = rpn.test_cfg
            anchors = rpn.prior_generator.grid_priors(sizes, device="cpu")
            self.proposals = RPNProposals(anchors, **_coder(rpn), nms_pre=rcfg.get("nms_pre", -1),
                                          iou_threshold=_nms_iou(rcfg), max_per_img=rcfg.get("max_per_img", 1000),
                                          min_bbox_size=rcfg.get("min_bbox_size", -1))
            bh = roi.bbox_head
            _require(not bh.custom_cls_channels and not bh.loss_cls.use_sigmoid, "a box head with sigmoid scores")
            self.box_coder = _coder(bh)
            self.box_rois = _roi_features(roi.bbox_roi_extractor)
            self.rcnn_cfg = dict(score_thr=float(roi.test_cfg.score_thr), iou_threshold=_nms_iou(roi.test_cfg),
                                 max_num=int(roi.test_cfg.max_per_img))
            if self.with_mask:
                _require(not roi.share_roi_extractor, "a mask head sharing the box RoI extractor")
                self.mask_rois = _roi_features(roi.mask_roi_extractor)
                self.mask_thr_binary = float(roi.test_cfg.get("mask_thr_binary", 0.5))
        else:
            head = getattr(model, "bbox_head", None)
            _require(head is not None and hasattr(head, "prior_generator") and head.use_sigmoid_cls
                     and not getattr(head, "with_score_factors", False),
                     f"head {type(head).__name__} (an anchor head with sigmoid scores and no score factors)")
            cfg = head.test_cfg
            self.post = DenseDetectionPostProcess(
                head.prior_generator.grid_priors(sizes, device="cpu"), head.cls_out_channels, **_coder(head),
                score_thr=cfg.get("score_thr", 0.0), nms_pre=cfg.get("nms_pre", -1), iou_threshold=_nms_iou(cfg),
                max_per_img=cfg.get("max_per_img", 100), min_bbox_size=cfg.get("min_bbox_size", -1))

    @property
    def output_names(self) -> List[str]:
        return ["boxes", "scores", "labels"] + (["masks"] if self.with_mask else [])

    def forward(self, x, img_shape, scale_factor):
        from ..deploy.detectors import decode_deltas, multiclass_nms

        feats = self.detector.extract_feat(x)
        if not self.two_stage:
            cls_scores, bbox_preds = self.detector.bbox_head(feats)
            return self.post(cls_scores, bbox_preds, img_shape, scale_factor)
        roi = self.detector.roi_head
        proposals = self.proposals(*self.detector.rpn_head(feats), img_shape)
        cls_score, bbox_pred = roi.bbox_head(self.box_rois(feats, proposals))
        scores = F.softmax(cls_score, dim=-1)
        boxes = decode_deltas(proposals, bbox_pred, self.box_coder["means"], self.box_coder["stds"], img_shape)
        boxes, scores, labels = multiclass_nms(boxes, scores, **self.rcnn_cfg)
        outs = (boxes / scale_factor.repeat(2), scores, labels)
        if self.with_mask:
            masks = roi.mask_head(self.mask_rois(feats, boxes))
            masks = (masks[:, 0] if roi.mask_head.class_agnostic else masks[torch.arange(masks.shape[0]), labels])
            masks = masks.sigmoid()
            outs = outs + (masks,)
        return outs


# ---------------------------------------------------------------------------------------------------------------
# export with post-processing: metadata for the runtime and the check against the framework's own inference
# ---------------------------------------------------------------------------------------------------------------
# boxes (pixels), scores, masks: 1% of a mask's pixels or 2 pixels (DetectionDifference.within)
DETECTION_TOLERANCE = dict(box_atol=1e-2, score_atol=1e-4, mask_frac=1e-2, mask_px=2)
# compare_detections also lets a detection scored within score_atol of a cut-off (score_thr, or the lowest kept
# score when max_per_img detections are kept) be in one result only: detection_cutoffs gives them
SEGMENTATION_TOLERANCE = 1e-3  # fraction of pixels whose label may differ (arg-max of near-equal logits)
_IGNORED_STEPS = {"LoadImageFromFile", "LoadImageFromNDArray", "LoadAnnotations", "PackDetInputs",
                  "PackSegInputs"}


def pipeline_resize_steps(cfg) -> List[dict]:
    """The resize steps of the config's test pipeline, for the runtime; other transforms are refused."""
    ds = cfg.test_dataloader.dataset
    while "pipeline" not in ds and "dataset" in ds:
        ds = ds.dataset
    steps = []
    for t in ds.get("pipeline", []):
        kind = t["type"].split(".")[-1]
        if kind in _IGNORED_STEPS:
            continue
        if kind == "Resize" and t.get("scale") is not None and t.get("scale_factor") is None:
            steps.append(dict(type="Resize", scale=[int(v) for v in t["scale"]], keep_ratio=bool(t.get("keep_ratio")),
                              interpolation=t.get("interpolation", "bilinear")))
        elif kind == "ResizeToMultiple":
            steps.append(dict(type="ResizeToMultiple", size_divisor=int(t.get("size_divisor", 32)),
                              interpolation=t.get("interpolation") or "bilinear"))
        else:
            raise ValueError(f"the test pipeline step {t['type']} is not supported by the ONNX runtime's "
                             f"pre-processing (Resize with a scale, ResizeToMultiple). Change the test pipeline "
                             f"(--cfg-options) or export without post-processing.")
    return steps


def class_names(cfg, model: nn.Module) -> List[str]:
    meta = getattr(model, "dataset_meta", None) or {}
    names = meta.get("classes") or cfg.test_dataloader.dataset.get("metainfo", {}).get("classes")
    if not names:
        import importlib

        registry = importlib.import_module(f"{cfg.get('default_scope', 'mmdet')}.registry").DATASETS
        ds_cls = registry.get(cfg.test_dataloader.dataset.type)
        names = getattr(ds_cls, "METAINFO", {}).get("classes")
    return [str(n) for n in names] if names else []


def fitting_image_size(steps: List[dict], size: Tuple[int, int]) -> Tuple[int, int]:
    """An original-image size whose test-time resize fits the export size (for the export check)."""
    from ..deploy.runtime import apply_resize_steps
    import numpy as np

    H, W = size
    for f in (0.75, 1.0, 0.5, 0.25):
        oh, ow = max(8, int(H * f)), max(8, int(W * f))
        h, w = apply_resize_steps(np.zeros((oh, ow, 3), np.uint8), steps).shape[:2]
        if h <= H and w <= W:
            return oh, ow
    h, w = apply_resize_steps(np.zeros((H, W, 3), np.uint8), steps).shape[:2]
    raise ValueError(f"the config's test pipeline resizes a {H}x{W} image to {h}x{w}, larger than the export size "
                     f"{H}x{W}: export with --shape {-(-h // 32) * 32} {-(-w // 32) * 32}, or change the test resize "
                     f"(--cfg-options test_dataloader.dataset.pipeline.<i>.scale=...).")


def deploy_metadata(cfg, model: nn.Module, kind: str, size: Tuple[int, int], name: str,
                    export_module: Optional[nn.Module] = None) -> dict:
    from ..deploy.runtime import FORMAT_VERSION

    pre = preprocessing(cfg)
    H, W = int(size[0]), int(size[1])
    meta = dict(format=FORMAT_VERSION, config=name, input_size=[H, W], pipeline=pipeline_resize_steps(cfg),
                mean=pre["mean"], std=pre["std"], bgr_to_rgb=pre["to_rgb"], pad_value=0,
                classes=class_names(cfg, model))
    if kind == "detector":
        masks = export_module.with_mask
        meta.update(task="instance_segmentation" if masks else "detection")
        meta["inputs"] = dict(input=f"(1, 3, {H}, {W}) float32, preprocessed and zero-padded",
                              img_shape="(2,) float32: height, width of the resized image inside input",
                              scale_factor="(2,) float32: w_scale, h_scale (resized / original)")
        meta["outputs"] = dict(boxes="(n, 4) float32 x1, y1, x2, y2 in original-image pixels",
                               scores="(n,) float32, decreasing", labels="(n,) int64 class index")
        if masks:
            meta["mask_thr_binary"] = export_module.mask_thr_binary
            meta["outputs"]["masks"] = ("(n, 28, 28) float32 mask probabilities inside each box (paste with "
                                        "effvit_plugins.deploy.paste_masks, threshold mask_thr_binary)")
    else:
        meta.update(task="semantic_segmentation")
        meta["inputs"] = dict(input=f"(1, 3, {H}, {W}) float32, preprocessed and zero-padded",
                              img_shape="(2,) int64: height, width of the resized image inside input",
                              ori_shape="(2,) int64: height, width of the original image")
        meta["outputs"] = dict(labels="(1, h, w) int64 class index per original-image pixel")
    return meta


def mmdet_detections(model: nn.Module, pre, class_names_=()):
    """mmdet's own test-time inference (``predict`` with rescaling) on a preprocessed input."""
    from mmdet.structures import DetDataSample

    from ..deploy.runtime import Detections

    H, W = pre.input.shape[-2:]
    sample = DetDataSample(metainfo=dict(img_shape=pre.img_shape, ori_shape=pre.ori_shape,
                                         scale_factor=pre.scale_factor, batch_input_shape=(H, W), pad_shape=(H, W)))
    with torch.no_grad():
        res = model.predict(torch.from_numpy(pre.input), [sample], rescale=True)[0].pred_instances
    masks = res.masks.numpy() if "masks" in res else None
    return Detections(res.bboxes.numpy(), res.scores.numpy(), res.labels.numpy(), masks, tuple(class_names_))


def detection_cutoffs(model: nn.Module) -> dict:
    """The score cut-offs of a detector's final detections (``score_thr``, ``max_per_img`` of its test_cfg: the
    RetinaNet head's, or the R-CNN stage's), as :func:`~effvit_plugins.deploy.runtime.compare_detections` takes
    them."""
    head = model.roi_head if getattr(model, "roi_head", None) is not None else model.bbox_head
    cfg = head.test_cfg
    return dict(score_thr=float(cfg.get("score_thr", 0.0)), max_per_img=int(cfg.get("max_per_img", 100)))


def detection_checker(model: nn.Module, meta: dict, what: str, seed: int = 0):
    """``checker(path)`` for :func:`effvit_plugins.deploy.export_onnx`: the exported graph run by onnxruntime with
    the numpy pre/post-processing (:class:`~effvit_plugins.deploy.OnnxDetector`) against mmdet's own inference on a
    generated image; raises :class:`~effvit_plugins.deploy.ExportError` beyond :data:`DETECTION_TOLERANCE`."""
    from ..deploy import ExportError
    from ..deploy.runtime import OnnxDetector, compare_detections, generated_image

    def check(path):
        det = OnnxDetector(path)
        pre = det.preprocess(generated_image(*fitting_image_size(meta["pipeline"], meta["input_size"]), seed=seed))
        try:
            ours = det.postprocess(det.run(pre), pre)
        except Exception as e:  # onnxruntime's own exception types
            raise ExportError(f"{what}: onnxruntime cannot run the exported graph: "
                              f"{str(e).strip().splitlines()[0][:400]}") from None
        diff = compare_detections(ours, mmdet_detections(model, pre), tie=DETECTION_TOLERANCE["score_atol"],
                                  **detection_cutoffs(model))
        if not diff.within(**DETECTION_TOLERANCE):
            raise ExportError(f"{what}: onnxruntime's detections differ from mmdet's ({diff}; tolerance "
                              f"{DETECTION_TOLERANCE}).")
        most = max((d for d, _ in diff.mask_diffs), default=0)
        return (["detections", "box px", "score", "mask fraction", "mask pixels"],
                [(tuple(meta["input_size"]), [float(len(ours)), diff.box, diff.score, diff.mask_pixels, most])])
    return check


def segmentation_checker(model: nn.Module, meta: dict, what: str, seed: int = 0):
    """``checker(path)``: the exported segmentor's labels (onnxruntime) against mmseg's ``predict`` on a generated
    image; at most :data:`SEGMENTATION_TOLERANCE` of the pixels may differ."""
    from mmseg.structures import SegDataSample

    from ..deploy import ExportError
    from ..deploy.runtime import OnnxSegmentor, generated_image

    def check(path):
        seg = OnnxSegmentor(path)
        pre = seg.preprocess(generated_image(*fitting_image_size(meta["pipeline"], meta["input_size"]), seed=seed))
        try:
            ours = seg.run(pre)
        except Exception as e:
            raise ExportError(f"{what}: onnxruntime cannot run the exported graph: "
                              f"{str(e).strip().splitlines()[0][:400]}") from None
        (H, W), (h, w) = pre.input.shape[-2:], pre.img_shape
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(H, W), ori_shape=pre.ori_shape,
                                             padding_size=[0, W - w, 0, H - h]))
        with torch.no_grad():
            ref = model.predict(torch.from_numpy(pre.input), [sample])[0].pred_sem_seg.data[0].numpy()
        frac = float((ours != ref).mean()) if ours.shape == ref.shape else float("inf")
        if not frac <= SEGMENTATION_TOLERANCE:
            raise ExportError(f"{what}: onnxruntime's labels differ from mmseg's on {frac:.2%} of the pixels "
                              f"(shapes {ours.shape} vs {ref.shape}; tolerance {SEGMENTATION_TOLERANCE:.1%}).")
        return ["pixels differing"], [(tuple(meta["input_size"]), [frac])]
    return check


def model_kind(model: nn.Module) -> str:
    """'classifier', 'segmentor' or 'detector' for an mmpretrain / mmseg / mmdet model."""
    names = {c.__module__.split(".")[0] for c in type(model).__mro__}
    if "mmseg" in names:
        return "segmentor"
    if "mmdet" in names:
        return "detector"
    if "mmpretrain" in names:
        return "classifier"
    raise ValueError(f"{type(model).__name__} is not an mmpretrain classifier, mmseg segmentor or mmdet detector.")


def preprocessing(cfg) -> dict:
    """mean / std / bgr_to_rgb of the config's data preprocessor (what the ONNX input must already have)."""
    dp = cfg.model.get("data_preprocessor") or cfg.get("data_preprocessor") or {}
    return dict(mean=list(dp.get("mean", [])), std=list(dp.get("std", [])),
                to_rgb=bool(dp.get("to_rgb", dp.get("bgr_to_rgb", False))))


def feature_config(cfg, out_indices: Optional[Sequence[int]] = None):
    """``cfg`` with the backbone returning the maps to export: ``out_indices`` if given, else every map when the
    model has no neck (a neck needs the config's own outputs, so a config with a neck is kept as it is)."""
    cfg = copy.deepcopy(cfg)
    has_neck = cfg.model.get("neck") is not None
    if out_indices is not None:
        if has_neck:
            raise ValueError("--out-indices cannot be used with a config whose model has a neck: the neck needs the "
                             "backbone outputs the config gives it. Drop --out-indices (the neck outputs are "
                             "exported).")
        cfg.model.backbone.out_indices = tuple(int(i) for i in out_indices)
    elif not has_neck:
        cfg.model.backbone.out_indices = None  # resolved by build_export_model once the map count is known
    return cfg


def build_export_model(cfg, checkpoint: Optional[str] = None, features: bool = False,
                       out_indices: Optional[Sequence[int]] = None) -> Tuple[nn.Module, List[str], str]:
    """(module to export, output names, kind) for a config (+ optional checkpoint).

    ``features`` exports the backbone (+ neck) outputs of any config; otherwise classifiers give logits and
    segmentors logits at the input size. Detectors here only as features; with their post-processing (and
    segmentors with the arg-max) through :func:`build_deploy_export`.
    """
    from .tools_common import build_model_from_cfg

    if features:
        cfg = feature_config(cfg, out_indices)
        if cfg.model.get("neck") is None and cfg.model.backbone.get("out_indices", ()) is None:
            probe = copy.deepcopy(cfg)
            probe.model.backbone.out_indices = (-1,)
            with torch.device("meta"):
                n_maps = build_model_from_cfg(probe, device="meta").backbone.num_stages
            cfg.model.backbone.out_indices = tuple(range(n_maps))
    model = build_model_from_cfg(cfg)
    kind = model_kind(model)
    if checkpoint:
        from mmengine.runner import load_checkpoint

        load_checkpoint(model, checkpoint, map_location="cpu", strict=True, revise_keys=[(r"^module\.", "")])
        model.eval()
    if features:
        wrapper = Features(model).eval()
        if wrapper.neck is None:
            names = [f"stride{s}" for s in model.backbone.out_strides]
        else:
            with torch.inference_mode():
                n = len(wrapper(torch.randn(1, 3, 64, 64)))
            names = [f"neck{i}" for i in range(n)]
        return wrapper, names, kind
    if kind == "classifier":
        return ClassifierLogits(model).eval(), ["logits"], kind
    if kind == "segmentor":
        return SegmentorLogits(model).eval(), ["logits"], kind
    raise ValueError(f"{type(model).__name__} ({kind}): a detector is exported with its post-processing "
                     f"(--with-postprocess) or as backbone features (--features).")


@dataclasses.dataclass
class DeployExport:
    """Everything :func:`effvit_plugins.deploy.export_onnx` needs for a model with its post-processing."""
    module: nn.Module
    kind: str  # 'detector' or 'segmentor'
    inputs: Tuple[torch.Tensor, ...]
    input_names: List[str]
    output_names: List[str]
    metadata: dict
    checker: Callable


def build_deploy_export(cfg, checkpoint: Optional[str], size: Tuple[int, int], name: str) -> DeployExport:
    """An mmdet detector (RetinaNet / Mask R-CNN) or mmseg segmentor with its post-processing, at the fixed padded
    input size ``size`` = (H, W), with the runtime metadata and the check against the framework's inference."""
    from .tools_common import build_model_from_cfg

    model = build_model_from_cfg(cfg)
    kind = model_kind(model)
    if checkpoint:
        from mmengine.runner import load_checkpoint

        ckpt = load_checkpoint(model, checkpoint, map_location="cpu", strict=True, revise_keys=[(r"^module\.", "")])
        meta = (ckpt or {}).get("meta", {}) if isinstance(ckpt, dict) else {}
        if meta.get("dataset_meta"):
            model.dataset_meta = meta["dataset_meta"]
        model.eval()
    H, W = int(size[0]), int(size[1])
    what = f"{name} ({kind} with post-processing)"
    if kind == "detector":
        module = DetectorExport(model, (H, W)).eval()
        meta = deploy_metadata(cfg, model, kind, (H, W), name, module)
        inputs = (torch.randn(1, 3, H, W), torch.tensor([float(H), float(W)]), torch.tensor([1.0, 1.0]))
        return DeployExport(module, kind, inputs, ["input", "img_shape", "scale_factor"], module.output_names,
                            meta, detection_checker(model, meta, what))
    if kind == "segmentor":
        module = SegmentorLabels(model).eval()
        meta = deploy_metadata(cfg, model, kind, (H, W), name)
        inputs = (torch.randn(1, 3, H, W), torch.tensor([H, W]), torch.tensor([H, W]))
        return DeployExport(module, kind, inputs, ["input", "img_shape", "ori_shape"], ["labels"], meta,
                            segmentation_checker(model, meta, what))
    raise ValueError(f"{type(model).__name__} is a classifier: it has no post-processing to export (drop "
                     f"--with-postprocess; its logits are exported).")
