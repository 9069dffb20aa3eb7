"""Deployment, framework-free (plain PyTorch + onnx / onnxruntime, imported when used):

* :mod:`.onnx` -- :func:`export_onnx` (BN folded on a copy, opset 20, checked with onnxruntime before the file is
  written) and the check itself (:func:`check_onnx`, :func:`ort_session`);
* :mod:`.folding` -- :func:`fold_batchnorm`, every Conv -> BatchNorm pair of a copy merged into the Conv;
* :mod:`.rewrites` -- the graph rewrites of an export (:func:`graph_rewrites`: GroupNorm with per-channel
  reductions, integer-factor upsampling as Conv + DepthToSpace at a fixed size);
* :mod:`.detectors` -- detector post-processing as exportable PyTorch (box decoding, score threshold, per-class
  NMS as ONNX ``NonMaxSuppression``, RoIAlign per FPN level);
* :mod:`.runtime` -- running such an export with onnxruntime + numpy: :class:`OnnxDetector`,
  :class:`OnnxSegmentor`, :func:`preprocess`, :func:`paste_masks` (the file's metadata describes its
  pre-processing and outputs).

The OpenMMLab-specific part (which ``nn.Module`` to export from a config: logits of a classifier / segmentor, or the
backbone features) is :mod:`effvit_plugins.mm.deploy`; latency measurements are in
:mod:`effvit_plugins.utils.benchmark`.
"""
from .folding import fold_batchnorm
from .onnx import (OPSET, RTOL, ExportError, ExportReport, check_onnx, export_onnx, graph_op_counts,
                   max_relative_error, ort_session, read_metadata, unfolded_batchnorms, write_metadata)
from .rewrites import exporting_fixed_size, graph_rewrites
from .runtime import Detections, OnnxDetector, OnnxSegmentor, paste_masks, preprocess

__all__ = [
    "Detections", "OnnxDetector", "OnnxSegmentor", "paste_masks", "preprocess",
    "OPSET", "RTOL", "ExportError", "ExportReport", "check_onnx", "export_onnx", "exporting_fixed_size",
    "fold_batchnorm", "graph_op_counts", "graph_rewrites", "max_relative_error", "ort_session",
    "read_metadata", "unfolded_batchnorms", "write_metadata",
]
