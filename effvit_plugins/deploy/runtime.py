"""Running an exported detector or segmentor with onnxruntime + numpy (no PyTorch model, no OpenMMLab).

``tools/deploy/export_onnx.py`` writes what the runtime needs into the ONNX file's ``metadata_props`` (key
:data:`METADATA_KEY`, a JSON object): the task, the fixed input size, the test-time resize steps, mean / std /
channel order, the padding value, the class names and the mask threshold. So the file is self-describing:

    from effvit_plugins.deploy import OnnxDetector
    det = OnnxDetector("mask_rcnn.onnx")
    out = det(image)          # image: (h, w, 3) uint8 BGR, as cv2.imread / mmcv.imread give it
    out.boxes   # (n, 4) float32 x1, y1, x2, y2 in pixels of the original image
    out.scores  # (n,) float32, decreasing
    out.labels  # (n,) int64 class indices (out.class_names[i] is the name)
    out.masks   # (n, h, w) bool at the original image size (Mask R-CNN; None for box-only detectors)

    seg = OnnxSegmentor("sem_fpn.onnx")
    labels = seg(image)       # (h, w) int64 class index per pixel of the original image

Pre-processing (:func:`preprocess`) is the config's test pipeline: the resize steps (cv2 bilinear, mmcv's
rounding), BGR -> RGB, ``(x - mean) / std``, zero padding at the bottom / right to the export size. The graph
itself decodes boxes, thresholds scores, runs NMS per class, keeps the best ``max_per_img`` and, for Mask R-CNN,
runs the mask head on the kept boxes: its ``masks`` output is each detection's 28 x 28 mask probabilities inside
its box, which :func:`paste_masks` pastes into the image (bilinear, thresholded), as mmdet does on the CPU.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

METADATA_KEY = "effvit_plugins.deploy"
FORMAT_VERSION = 1
DETECTION_TASKS = ("detection", "instance_segmentation")


# ---------------------------------------------------------------------------------------------------------------
# pre-processing
# ---------------------------------------------------------------------------------------------------------------
def rescaled_size(h: int, w: int, scale: Sequence[int]) -> Tuple[int, int]:
    """Size of an (h, w) image resized with its aspect ratio kept to fit ``scale`` = (long edge, short edge) in
    either orientation (mmcv's ``imrescale``: factor min(long / max(h, w), short / min(h, w)), sides rounded
    half up)."""
    long_edge, short_edge = max(scale), min(scale)
    f = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * float(f) + 0.5), int(w * float(f) + 0.5)


def _resize(img: np.ndarray, h: int, w: int, interpolation: str) -> np.ndarray:
    import cv2

    codes = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
             "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}
    if interpolation not in codes:
        raise ValueError(f"resize interpolation {interpolation!r} is not one of {sorted(codes)}")
    return cv2.resize(img, (w, h), interpolation=codes[interpolation])


def apply_resize_steps(image: np.ndarray, steps: Sequence[dict]) -> np.ndarray:
    """The metadata's resize steps: ``Resize`` (``scale`` (w, h), ``keep_ratio``) and ``ResizeToMultiple``
    (``size_divisor``: sides rounded up to a multiple)."""
    img = image
    for step in steps:
        kind, interp = step["type"], step.get("interpolation", "bilinear")
        h, w = img.shape[:2]
        if kind == "Resize":
            if step.get("keep_ratio", True):
                nh, nw = rescaled_size(h, w, step["scale"])
            else:
                nw, nh = int(step["scale"][0]), int(step["scale"][1])
        elif kind == "ResizeToMultiple":
            d = int(step["size_divisor"])
            nh, nw = int(math.ceil(h / d)) * d, int(math.ceil(w / d)) * d
        else:
            raise ValueError(f"unknown pre-processing step {kind!r} in the ONNX metadata")
        if (nh, nw) != (h, w) or kind == "Resize":
            img = _resize(img, nh, nw, interp)
    return img


@dataclasses.dataclass
class Preprocessed:
    input: np.ndarray  # (1, 3, H, W) float32, the graph's ``input``
    img_shape: Tuple[int, int]  # (h, w) of the resized image inside ``input``
    scale_factor: Tuple[float, float]  # (w_scale, h_scale): resized / original
    ori_shape: Tuple[int, int]  # (h, w) of the original image


def preprocess(image: np.ndarray, meta: dict) -> Preprocessed:
    """An (h, w, 3) uint8 BGR image -> the graph's input, as the config's test pipeline + data preprocessor."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) BGR image, got an array of shape {image.shape}")
    oh, ow = image.shape[:2]
    img = apply_resize_steps(image, meta["pipeline"])
    h, w = img.shape[:2]
    H, W = meta["input_size"]
    if h > H or w > W:
        raise ValueError(f"the test pipeline resizes this {oh}x{ow} image to {h}x{w}, larger than the exported "
                         f"input size {H}x{W}: export with a larger --shape (at least {h} {w}).")
    x = img.astype(np.float32)
    if meta.get("bgr_to_rgb"):
        x = x[..., ::-1]
    if meta.get("mean"):
        x = (x - np.asarray(meta["mean"], np.float32)) / np.asarray(meta["std"], np.float32)
    out = np.full((1, 3, H, W), meta.get("pad_value", 0), dtype=np.float32)
    out[0, :, :h, :w] = x.transpose(2, 0, 1)
    return Preprocessed(out, (h, w), (w / ow, h / oh), (oh, ow))


def generated_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic (h, w, 3) uint8 BGR test image: smooth noise with filled rectangles and ellipses, plus pixel
    noise (no flat regions: equal features there would give equal scores, whose order is arbitrary)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    for _ in range(6):
        x0, x1 = sorted(rng.integers(0, w, 2))
        y0, y1 = sorted(rng.integers(0, h, 2))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), color, -1)
        else:
            cv2.ellipse(img, ((int(x0 + x1) // 2, int(y0 + y1) // 2)), (max(1, int(x1 - x0) // 2),
                                                                        max(1, int(y1 - y0) // 2)), 0, 0, 360,
                        color, -1)
    noise = rng.integers(-12, 13, img.shape)
    return np.clip(img.astype(np.int64) + noise, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# mask pasting
# ---------------------------------------------------------------------------------------------------------------
def _sampling_matrix(pixels: np.ndarray, lo: np.float32, hi: np.float32, size: int) -> np.ndarray:
    """Rows: bilinear weights over the ``size`` mask cells for each image pixel centre in ``pixels``; the box
    [lo, hi] spans the mask; cells outside the mask count as zero (align_corners=False sampling)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (pixels.astype(np.float32) + np.float32(0.5) - lo) / (hi - lo) * np.float32(2) - np.float32(1)
    g[~np.isfinite(g)] = 0  # a box of zero width: mmdet samples its centre
    src = ((g + np.float32(1)) * np.float32(size) - np.float32(1)) / np.float32(2)
    left = np.floor(src)
    frac = (src - left).astype(np.float32)
    left = left.astype(np.int64)
    m = np.zeros((len(pixels), size), np.float32)
    rows = np.arange(len(pixels))
    for idx, wgt in ((left, np.float32(1) - frac), (left + 1, frac)):
        ok = (idx >= 0) & (idx < size)
        m[rows[ok], idx[ok]] += wgt[ok]
    return m


def paste_masks(masks: np.ndarray, boxes: np.ndarray, image_shape: Tuple[int, int],
                threshold: float = 0.5) -> np.ndarray:
    """Per-detection mask probabilities ``(n, s, s)`` inside their boxes ``(n, 4)`` (image coordinates) -> boolean
    masks ``(n, h, w)``: each image pixel centre sampled bilinearly from its box's mask (zero outside it), within
    one pixel around the box, then ``>= threshold``."""
    masks, boxes = np.asarray(masks, np.float32), np.asarray(boxes, np.float32)
    h, w = int(image_shape[0]), int(image_shape[1])
    out = np.zeros((len(masks), h, w), dtype=bool)
    for i, (m, (x0, y0, x1, y1)) in enumerate(zip(masks, boxes)):
        xa, ya = max(int(math.floor(x0)) - 1, 0), max(int(math.floor(y0)) - 1, 0)
        xb, yb = min(int(math.ceil(x1)) + 1, w), min(int(math.ceil(y1)) + 1, h)
        if xb <= xa or yb <= ya:
            continue
        rows = _sampling_matrix(np.arange(ya, yb), y0, y1, m.shape[0])
        cols = _sampling_matrix(np.arange(xa, xb), x0, x1, m.shape[1])
        out[i, ya:yb, xa:xb] = (rows @ m @ cols.T) >= threshold
    return out


# ---------------------------------------------------------------------------------------------------------------
# runtime classes
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Detections:
    """Detections of one image, in original-image pixel coordinates, by decreasing score."""
    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (n,) float32
    labels: np.ndarray  # (n,) int64
    masks: Optional[np.ndarray] = None  # (n, h, w) bool (instance segmentation), else None
    class_names: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.scores)


def load_metadata(session) -> dict:
    from .onnx import read_metadata

    props = read_metadata(session)
    if METADATA_KEY not in props:
        raise ValueError(f"this ONNX file has no {METADATA_KEY!r} metadata: it was not exported with its "
                         f"post-processing by tools/deploy/export_onnx.py (--with-postprocess), so the runtime does "
                         f"not know its pre-processing. Re-export it with that tool.")
    meta = json.loads(props[METADATA_KEY])
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"ONNX metadata format {meta.get('format')} is not {FORMAT_VERSION}; re-export the file "
                         f"with this version of tools/deploy/export_onnx.py.")
    return meta


class _OnnxModel:
    tasks: Tuple[str, ...] = ()

    def __init__(self, path: str, threads: Optional[int] = None, session=None):
        from .onnx import ort_session

        self.path = path
        self.session = session or ort_session(path, threads)
        self.meta = load_metadata(self.session)
        if self.meta["task"] not in self.tasks:
            raise ValueError(f"{path} is a {self.meta['task']} model; use "
                             f"{'OnnxSegmentor' if self.meta['task'] == 'semantic_segmentation' else 'OnnxDetector'}.")
        self.class_names = tuple(self.meta.get("classes") or ())

    def preprocess(self, image: np.ndarray) -> Preprocessed:
        return preprocess(image, self.meta)


class OnnxDetector(_OnnxModel):
    """``OnnxDetector(path)(image) -> Detections`` for a RetinaNet / Mask R-CNN exported with its post-processing
    (see the module docstring for the output format)."""
    tasks = DETECTION_TASKS

    def run(self, pre: Preprocessed) -> Dict[str, np.ndarray]:
        """The graph's raw outputs for a preprocessed image (``masks``: (n, 28, 28) probabilities)."""
        feeds = {"input": pre.input, "img_shape": np.asarray(pre.img_shape, np.float32),
                 "scale_factor": np.asarray(pre.scale_factor, np.float32)}
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, feeds)))

    def postprocess(self, raw: Dict[str, np.ndarray], pre: Preprocessed) -> Detections:
        masks = None
        if "masks" in raw:
            masks = paste_masks(raw["masks"], raw["boxes"], pre.ori_shape, self.meta.get("mask_thr_binary", 0.5))
        return Detections(raw["boxes"], raw["scores"], raw["labels"].astype(np.int64), masks, self.class_names)

    def __call__(self, image: np.ndarray) -> Detections:
        pre = self.preprocess(image)
        return self.postprocess(self.run(pre), pre)


class OnnxSegmentor(_OnnxModel):
    """``OnnxSegmentor(path)(image) -> (h, w) int64`` class index per pixel of the original image."""
    tasks = ("semantic_segmentation",)

    def run(self, pre: Preprocessed) -> np.ndarray:
        feeds = {"input": pre.input, "img_shape": np.asarray(pre.img_shape, np.int64),
                 "ori_shape": np.asarray(pre.ori_shape, np.int64)}
        return self.session.run(None, feeds)[0][0]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.run(self.preprocess(image))


# ---------------------------------------------------------------------------------------------------------------
# comparing detections
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DetectionDifference:
    """How two detection results differ, detection by detection in score order."""
    count: Tuple[int, int]  # (ours, reference)
    labels_differ: int  # detections whose label differs
    box: float  # largest |coordinate difference| in pixels
    score: float  # largest |score difference|
    mask_pixels: float  # largest fraction of a detection's mask pixels (union) that differ; 0 without masks
    mask_diffs: Tuple[Tuple[int, int], ...] = ()  # (differing pixels, union) per pair of masks
    at_cut: Tuple[int, int] = (0, 0)  # detections in one result only, scored within ``tie`` of a cut-off (ours, ref)

    def within(self, box_atol: float, score_atol: float, mask_frac: float, mask_px: int = 2) -> bool:
        """Same count (besides the detections at a cut-off, see :func:`compare_detections`) and labels, boxes /
        scores within the tolerances, and in each mask at most ``mask_frac`` of its pixels or ``mask_px`` pixels
        differ (a pixel whose probability is 0.5 up to float rounding flips)."""
        masks_ok = self.mask_pixels <= mask_frac or all(d <= max(mask_px, mask_frac * u) for d, u in self.mask_diffs)
        return (self.count[0] - self.at_cut[0] == self.count[1] - self.at_cut[1] and self.labels_differ == 0
                and self.box <= box_atol and self.score <= score_atol and masks_ok)

    def __str__(self) -> str:
        most = max((d for d, _ in self.mask_diffs), default=0)
        cut = (f" ({self.at_cut[0]} vs {self.at_cut[1]} of them only in one result, scored at a cut-off)"
               if any(self.at_cut) else "")
        return (f"{self.count[0]} vs {self.count[1]} detections{cut}, {self.labels_differ} labels differ, boxes "
                f"{self.box:.2e} px, scores {self.score:.2e}, masks {self.mask_pixels:.2e} of the pixels (at most "
                f"{most} pixels of a mask)")


def compare_detections(ours: Detections, ref: Detections, tie: float = 1e-4, score_thr: Optional[float] = None,
                       max_per_img: Optional[int] = None) -> DetectionDifference:
    """Pair the detections of two results and measure how they differ. Detections are paired in score order; among
    detections whose scores are within ``tie`` of each other (their order can swap between two runtimes) each is
    paired with the one of the same label and the closest box.

    Cut-offs: which detections a result holds is decided by score at ``score_thr`` and, when a result holds
    ``max_per_img`` detections, at its lowest score. Two runtimes whose scores agree within ``tie`` may put a
    detection scored within ``tie`` of a cut-off on different sides of it: such a detection, found in one result
    only, is counted in ``at_cut`` and not paired (any other detection without a partner is a difference). Nothing
    else is excused: the detections above the cut-offs must pair up within the tolerances."""
    cuts = ([float(score_thr)] if score_thr is not None else []) + [
        float(r.scores.min()) for r in (ours, ref) if max_per_img and len(r) >= max_per_img]

    def at_a_cut(score) -> bool:
        return any(abs(float(score) - c) <= tie for c in cuts)

    pairs, used, cut_ours = [], set(), 0
    for i in range(len(ours)):
        best, best_cost = None, float("inf")
        for j in range(len(ref)):
            if j in used or abs(float(ours.scores[i]) - float(ref.scores[j])) > tie:
                continue
            cost = float(np.abs(ours.boxes[i] - ref.boxes[j]).max()) + (1e9 if ours.labels[i] != ref.labels[j] else 0)
            if cost < best_cost:
                best, best_cost = j, cost
        if (best is None or best_cost >= 1e9) and at_a_cut(ours.scores[i]):
            cut_ours += 1  # no partner of its label within ``tie``, at a cut-off: on the other side of it in ref
            continue
        if best is None:
            best = next((j for j in range(len(ref)) if j not in used), None)
        if best is None:
            break
        used.add(best)
        pairs.append((i, best))
    cut_ref = sum(1 for j in range(len(ref)) if j not in used and at_a_cut(ref.scores[j]))
    n = min(len(ours) - cut_ours, len(ref) - cut_ref)
    inf = float("inf") if len(ours) - cut_ours != len(ref) - cut_ref or len(pairs) != n else 0.0
    box = max((float(np.abs(ours.boxes[i] - ref.boxes[j]).max()) for i, j in pairs), default=0.0)
    score = max((abs(float(ours.scores[i]) - float(ref.scores[j])) for i, j in pairs), default=0.0)
    labels = sum(int(ours.labels[i] != ref.labels[j]) for i, j in pairs)
    frac, diffs = 0.0, []
    if ours.masks is not None or ref.masks is not None:
        if ours.masks is None or ref.masks is None or ours.masks.shape[1:] != ref.masks.shape[1:]:
            frac = float("inf")
        else:
            for i, j in pairs:
                a, b = ours.masks[i], ref.masks[j]
                union, diff = int((a | b).sum()), int((a ^ b).sum())
                diffs.append((diff, union))
                frac = max(frac, diff / union if union else 0.0)
    return DetectionDifference((len(ours), len(ref)), labels, max(box, inf), max(score, inf), max(frac, inf),
                               tuple(diffs) if not inf and frac != float("inf") else (), (cut_ours, cut_ref))


def describe_outputs(meta: dict) -> List[str]:
    """Lines describing the inputs and outputs of an exported file (printed by the export tool)."""
    H, W = meta["input_size"]
    steps = ", ".join(f"{s['type']}({', '.join(f'{k}={v}' for k, v in s.items() if k != 'type')})"
                      for s in meta["pipeline"]) or "none"
    lines = [f"pre-processing (effvit_plugins.deploy.runtime.preprocess): {steps}; "
             f"{'BGR->RGB, ' if meta.get('bgr_to_rgb') else ''}(x - mean) / std with mean {meta.get('mean')} std "
             f"{meta.get('std')}; zero padding at the bottom/right to {H}x{W}",
             "graph inputs: " + "; ".join(f"{k} {v}" for k, v in meta["inputs"].items()),
             "graph outputs: " + "; ".join(f"{k} {v}" for k, v in meta["outputs"].items())]
    if meta["task"] in DETECTION_TASKS:
        lines.append("runtime: effvit_plugins.deploy.OnnxDetector(path)(bgr_image) -> Detections(boxes (n, 4) "
                     "x1y1x2y2 original pixels, scores (n,), labels (n,) int64"
                     + (", masks (n, h, w) bool" if meta["task"] == "instance_segmentation" else "") + ")")
    else:
        lines.append("runtime: effvit_plugins.deploy.OnnxSegmentor(path)(bgr_image) -> (h, w) int64 labels")
    return lines
