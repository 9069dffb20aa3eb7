"""What Detectron2's export (``tools/deploy/export_model.py``, ``detectron2.export``) needs on our stack, installed
by :func:`patch_export` (an entry of :data:`effvit_plugins.detectron2.run.PATCHES`):

* ``torch.onnx.export`` defaults to the TorchScript exporter (``dynamo=False``) at Detectron2's opset
  (``detectron2.export.STABLE_ONNX_OPSET_VERSION``, 11) unless the caller chooses: torch >= 2.9 defaults to the
  dynamo exporter, which needs ``onnxscript`` and does not export Detectron2's traced models.
* Files that Detectron2 writes through its ``PathManager`` (``PathManager.open(path, "wb")``: ``model.onnx``,
  ``model.ts``, the TorchScript IR dumps, checkpoints) are written to a temporary file in the same folder and
  moved into place when the ``with`` block (or ``close()``) ends without an error: a failed export leaves no
  0-byte or truncated file. ``export_model.py`` opens ``model.onnx`` before exporting into it, so this is the level
  where the file comes into existence.
* ``RoIAlign`` with ``aligned=True`` (every Detectron2 pooler) exports correctly at opsets 11-15
  (:func:`roi_align_aligned_opset11`): torchvision's opset-11 translation warns and exports the *unaligned*
  operator (ONNX ``RoiAlign`` has no half-pixel mode before opset 16), which samples every box half a feature
  pixel off and gives different boxes and masks.

The attention cores need nothing here: EdgeViT's fused attention is written as matmuls + softmax whenever ONNX
exports it (:func:`effvit_plugins.models.layers.scaled_dot_product_attention`).
"""
from __future__ import annotations

import functools
import os
import uuid

import torch

__all__ = ["AtomicWriter", "patch_export", "register_roi_align_aligned", "roi_align_aligned_opset11"]

_ROI_ALIGN = "torchvision::roi_align"


# ---------------------------------------------------------------------------------------------------------------
# torch.onnx.export: the TorchScript exporter at Detectron2's opset
# ---------------------------------------------------------------------------------------------------------------
def _patch_onnx_export() -> None:
    from detectron2.export import STABLE_ONNX_OPSET_VERSION

    original = torch.onnx.export
    if getattr(original, "_effvit_detectron2", False):
        return

    @functools.wraps(original)
    def export(*args, **kwargs):
        kwargs.setdefault("dynamo", False)
        if not kwargs["dynamo"]:
            kwargs.setdefault("opset_version", STABLE_ONNX_OPSET_VERSION)
        return original(*args, **kwargs)

    export._effvit_detectron2 = True
    torch.onnx.export = export


# ---------------------------------------------------------------------------------------------------------------
# PathManager.open(path, "w"/"wb"): temporary file, moved into place on success
# ---------------------------------------------------------------------------------------------------------------
class AtomicWriter:
    """A file opened for writing under a temporary name next to ``path`` (created with the usual permissions),
    renamed to ``path`` by ``close()`` or by a ``with`` block that ends without an exception, and deleted by a
    ``with`` block that ends with one (nothing appears at ``path``). Everything else is the file's own
    (``write``, ``flush``, ``fileno``, ``name`` ...)."""

    def __init__(self, path: str, mode: str, **kwargs):
        self.path = os.fspath(path)
        folder, base = os.path.split(os.path.abspath(self.path))
        self.tmp = os.path.join(folder, f".{base}.{uuid.uuid4().hex[:12]}.tmp")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            self._file = os.fdopen(fd, mode, **kwargs)
        except BaseException:
            os.close(fd)
            os.remove(self.tmp)
            raise
        self._done = False

    def __getattr__(self, name):
        file = self.__dict__.get("_file")
        if file is None:
            raise AttributeError(name)
        return getattr(file, name)

    def __iter__(self):
        return iter(self._file)

    def __enter__(self):
        return self

    def _finish(self, commit: bool) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        except BaseException:
            commit = False
            raise
        finally:
            if commit:
                os.replace(self.tmp, self.path)
            elif os.path.exists(self.tmp):
                os.remove(self.tmp)

    def close(self) -> None:
        self._finish(commit=True)

    def discard(self) -> None:
        """Close and delete the temporary file; ``path`` is left as it was."""
        self._finish(commit=False)

    def __exit__(self, exc_type, exc, tb):
        self._finish(commit=exc_type is None)
        return False

    def __del__(self):  # never closed (an exception between open and with): nothing is written
        if not self.__dict__.get("_done", True):
            try:
                self.discard()
            except Exception:  # (interpreter shutdown)
                pass


def _is_local_write(path, mode: str) -> bool:
    return (isinstance(path, (str, os.PathLike)) and "://" not in os.fspath(path) and mode.startswith("w")
            and "+" not in mode)


def _patch_path_manager() -> None:
    from detectron2.utils.file_io import PathManager

    original = PathManager.open
    if getattr(original, "_effvit_detectron2", False):
        return

    @functools.wraps(original)
    def open_(path, mode: str = "r", buffering: int = -1, **kwargs):
        if not _is_local_write(path, mode):
            return original(path, mode, buffering, **kwargs)
        return AtomicWriter(path, mode, buffering=buffering, **kwargs)

    open_._effvit_detectron2 = True
    PathManager.open = open_  # an instance attribute: every `from detectron2.utils.file_io import PathManager`


# ---------------------------------------------------------------------------------------------------------------
# RoIAlign(aligned=True) at opsets 11-15
# ---------------------------------------------------------------------------------------------------------------
def _const(g, values, dtype=torch.float32):
    return g.op("Constant", value_t=torch.tensor(values, dtype=dtype))


def _column(g, rois, i: int):
    """``rois[:, i:i+1]`` (R, 1)."""
    return g.op("Slice", rois, _const(g, [i], torch.long), _const(g, [i + 1], torch.long), _const(g, [1], torch.long))


def roi_align_aligned_opset11(g, input, rois, spatial_scale: float, pooled_height: int, pooled_width: int,
                              sampling_ratio: int, aligned: int):
    """``torchvision::roi_align`` for opsets 11-15, correct for ``aligned=True`` too (``aligned=False`` is
    torchvision's own translation).

    ONNX ``RoiAlign`` before opset 16 is the legacy operator: box corners are not shifted by half a pixel, and a box
    smaller than one feature pixel is sampled as if it were one pixel wide. Shifting the boxes by ``-0.5 /
    spatial_scale`` fixes the first but not the second, so every output bin (adaptive sampling,
    ``sampling_ratio=0``) or every sample point (fixed ``sampling_ratio``) becomes a box of its own, pooled to
    1x1 by the legacy operator: a bin of at least one feature pixel is that bin (same sample grid,
    ``ceil(bin size)`` points a side, as the aligned kernel), a smaller one a one-pixel box centred on it (one
    point, at the bin centre, as the aligned kernel); a sample point is a one-pixel box centred on it with one
    sample. Bins of boxes with a zero or negative side are 0, as in the aligned kernel. The results equal
    ``torchvision.ops.roi_align(..., aligned=True)`` up to float rounding of the coordinates.
    """
    from torchvision.ops import _register_onnx_ops as tv_onnx

    if not aligned:
        return tv_onnx.roi_align_opset11(g, input, rois, spatial_scale, pooled_height, pooled_width,
                                         sampling_ratio, aligned)
    ph, pw, ratio = int(pooled_height), int(pooled_width), max(int(sampling_ratio), 0)
    per_bin = 1 if ratio == 0 else ratio  # sub-boxes per bin and side
    scale, half = _const(g, [float(spatial_scale)]), _const(g, [0.5])
    one = _const(g, [1.0])

    def side(lo_col: int, hi_col: int, pooled: int, axis: int):
        """(start, end) of the sub-boxes along one side: (R, pooled*per_bin) each, unsqueezed at ``axis``."""
        lo = g.op("Sub", g.op("Mul", _column(g, rois, lo_col), scale), half)  # torchvision: x * scale - 0.5
        hi = g.op("Sub", g.op("Mul", _column(g, rois, hi_col), scale), half)
        bin_size = g.op("Div", g.op("Sub", hi, lo), _const(g, [float(pooled)]))  # (R, 1)
        index = _const(g, [[float(p) for p in range(pooled) for _ in range(per_bin)]])  # (1, pooled*per_bin)
        bin_start = g.op("Add", lo, g.op("Mul", index, bin_size))
        # A box narrower than one pixel is widened to one pixel by the legacy operator (so that it samples once,
        # at its start + 0.5): such boxes are given half a pixel (an end of start + 1 might be computed as a width
        # a hair above 1, which would take two samples).
        if ratio == 0:  # the bin itself, or (less than a pixel) one pixel centred on it
            wide = g.op("Not", g.op("Less", bin_size, one))
            start = g.op("Where", wide, bin_start, g.op("Sub", g.op("Add", bin_start, g.op("Mul", bin_size, half)),
                                                        half))
            end = g.op("Add", start, g.op("Where", wide, bin_size, half))
        else:  # one pixel centred on each sample point
            frac = _const(g, [[(i + 0.5) / ratio for _ in range(pooled) for i in range(ratio)]])
            start = g.op("Sub", g.op("Add", bin_start, g.op("Mul", frac, bin_size)), half)
            end = g.op("Add", start, half)
        valid = g.op("Greater", bin_size, _const(g, [0.0]))
        return (g.op("Unsqueeze", start, axes_i=[axis]), g.op("Unsqueeze", end, axes_i=[axis]), valid)

    x0, x1, valid_x = side(1, 3, pw, 1)  # (R, 1, W')
    y0, y1, valid_y = side(2, 4, ph, 2)  # (R, H', 1)
    zero = g.op("Mul", g.op("Add", x0, y0), _const(g, [0.0]))  # (R, H', W') zeros, to broadcast with
    corners = [g.op("Unsqueeze", g.op("Add", c, zero), axes_i=[3]) for c in (x0, y0, x1, y1)]
    boxes = g.op("Reshape", g.op("Concat", *corners, axis_i=3), _const(g, [-1, 4], torch.long))
    batch = g.op("Add", g.op("Unsqueeze", _column(g, rois, 0), axes_i=[2]), zero)  # (R, H', W')
    batch = g.op("Cast", g.op("Reshape", batch, _const(g, [-1], torch.long)), to_i=7)  # INT64
    pooled = g.op("RoiAlign", input, boxes, batch, spatial_scale_f=1.0, output_height_i=1, output_width_i=1,
                  sampling_ratio_i=0 if ratio == 0 else 1, mode_s="avg")  # (R*H'*W', C, 1, 1)
    channels_first = g.op("Transpose", g.op("Flatten", pooled, axis_i=1), perm_i=[1, 0])  # (C, R*H'*W')
    if ratio == 0:
        out = g.op("Reshape", channels_first, _const(g, [0, -1, ph, pw], torch.long))
    else:
        out = g.op("Reshape", channels_first, _const(g, [0, -1, ph, ratio, pw, ratio], torch.long))
        out = g.op("ReduceMean", out, axes_i=[3, 5], keepdims_i=0)
    out = g.op("Transpose", out, perm_i=[1, 0, 2, 3])  # (R, C, ph, pw)
    if ratio == 0:  # the aligned kernel takes ceil(side / pooled) samples: none for a zero or negative side
        valid = g.op("Cast", g.op("And", valid_x, valid_y), to_i=1)  # FLOAT (R, 1)
        out = g.op("Mul", out, g.op("Unsqueeze", valid, axes_i=[2, 3]))
    return out


def register_roi_align_aligned() -> None:
    """Register :func:`roi_align_aligned_opset11` for ``torchvision::roi_align`` at opset 11 (torchvision's own
    translation stays in use from opset 16, where ONNX has ``coordinate_transformation_mode``)."""
    import torchvision  # noqa: F401  (registers torchvision's translations first)
    from torch.onnx.symbolic_helper import parse_args

    symbolic = parse_args("v", "v", "f", "i", "i", "i", "i")(roi_align_aligned_opset11)
    torch.onnx.register_custom_op_symbolic(_ROI_ALIGN, symbolic, 11)


def patch_export() -> None:
    """Everything in the module docstring (idempotent)."""
    _patch_onnx_export()
    _patch_path_manager()
    register_roi_align_aligned()
