"""ONNX export of our models and the onnxruntime check (framework-free: works on any ``nn.Module``).

Choices (see README "Deployment"):

* Exporter: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``). torch 2.13 defaults to the
  ``torch.export``-based exporter; it also exports our models correctly, but takes 20-30x longer (over a minute for
  EfficientViT-B0 on 2 cores) and needs ``onnxscript``. Size-dependent Python control flow is frozen at the traced
  size by tracing, so a dynamic export is only accepted after onnxruntime reproduces PyTorch at a second size.
* Opset 20: ``Gelu`` (with the tanh approximation of the EfficientViT-L models) is one native node there; at
  opset 17 the exporter writes it as eight element-wise nodes that onnxruntime does not fuse (EfficientViT-L1:
  427 -> 242 ms per image in onnxruntime). ``LayerNormalization`` is native since 17. onnxruntime's CPU provider
  runs both; for runtimes without opset 20 (TensorRT < 10) pass ``opset=17``.
* BatchNorm: folded explicitly into the preceding convolution of a copy of the model
  (:func:`effvit_plugins.deploy.folding.fold_batchnorm`) before export. The exported graph is checked: no
  BatchNormalization may follow a Conv.
* Graph rewrites (:mod:`effvit_plugins.deploy.rewrites`): GroupNorm with per-channel reductions always;
  integer-factor upsampling as a convolution + DepthToSpace in a fixed-size export.
* Precision: float32 throughout, so the linear attention of EfficientViT-MIT runs in float32 as in PyTorch.
* Check: onnxruntime (CPU) must reproduce the original PyTorch model (not the folded copy) within ``rtol``,
  measured as ``max |ort - torch| / max |torch|`` per output, at the export size and, for a dynamic export, at a
  second size. The file is written to a temporary name next to the target and moved into place only when
  everything passed: a failed export leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .folding import FOLD_PROBE_SIZE, fold_batchnorm
from .rewrites import graph_rewrites

OPSET = 20
RTOL = 1e-4


class ExportError(RuntimeError):
    """The model cannot be exported (or the export does not reproduce PyTorch); the message says why."""


@dataclasses.dataclass
class ExportReport:
    path: str
    opset: int
    dynamic: bool
    folded_bn: int
    output_names: List[str]
    checks: List[Tuple[Tuple[int, int], List[float]]]  # ((H, W), max relative error per output)
    op_counts: Dict[str, int]
    check_names: Optional[List[str]] = None  # what each error of ``checks`` measures (default: the outputs)

    @property
    def max_rel_error(self) -> float:
        return max((e for _, errs in self.checks for e in errs), default=float("nan"))


_UNSUPPORTED = re.compile(r"operator '([\w:.]+)' to ONNX opset version (\d+) is not supported")


def _explain_export_failure(e: Exception, what: str, opset: int) -> str:
    msg = str(e)
    m = _UNSUPPORTED.search(msg)
    if m:
        return (f"{what} cannot be exported to ONNX: the operator {m.group(1)} has no ONNX translation in opset "
                f"{m.group(2)} (torch.onnx, TorchScript exporter). Replace that operation in the model or export "
                f"without this part (e.g. --features for the backbone only).")
    first = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
    return f"{what} cannot be exported to ONNX opset {opset}: {type(e).__name__}: {first[:400]}"


def ort_session(path: str, threads: Optional[int] = None, optimize: bool = True):
    """onnxruntime CPU session with all graph optimisations (``threads`` intra-op threads; default: torch's)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # errors reach the caller as exceptions; no duplicate log lines
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    # no busy-waiting of idle pool threads after a run: they would steal the cores from whatever runs next in
    # this process (PyTorch timed interleaved with onnxruntime was up to 20x slower with spinning on)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _as_tuple(out) -> Tuple[torch.Tensor, ...]:
    if torch.is_tensor(out):
        return (out,)
    if isinstance(out, dict):
        return tuple(out.values())
    return tuple(out)


def max_relative_error(ours, ref) -> float:
    """``max |ours - ref| / max |ref|`` (NaN and shape mismatches count as infinite error)."""
    import numpy as np

    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape or not np.isfinite(ours).all():
        return float("inf")
    scale = max(float(np.abs(ref).max()) if ref.size else 0.0, 1e-12)
    return float(np.abs(ours - ref).max()) / scale if ref.size else 0.0


def check_onnx(path: str, model: nn.Module, shapes: Sequence[Tuple[int, int]], in_channels: int = 3,
               rtol: float = RTOL, what: str = "the model", seed: int = 0,
               session=None) -> List[Tuple[Tuple[int, int], List[float]]]:
    """Run the ONNX file with onnxruntime and ``model`` with PyTorch on the same random input at each of
    ``shapes``; raise :class:`ExportError` if any output differs by more than ``rtol`` (relative to the output's
    largest magnitude). Returns ``[((H, W), [error per output]), ...]``."""
    sess = session or ort_session(path)
    name = sess.get_inputs()[0].name
    g = torch.Generator().manual_seed(seed)
    results = []
    for h, w in shapes:
        x = torch.randn(1, in_channels, h, w, generator=g)
        with torch.inference_mode():
            ref = [t.float().numpy() for t in _as_tuple(model(x))]
        try:
            outs = sess.run(None, {name: x.numpy()})
        except Exception as e:  # onnxruntime raises its own exception types
            raise ExportError(f"{what}: onnxruntime cannot run the exported graph at {h}x{w}: "
                              f"{str(e).strip().splitlines()[0][:400]}") from None
        if len(outs) != len(ref):
            raise ExportError(f"{what}: onnxruntime returned {len(outs)} outputs, PyTorch {len(ref)}.")
        errs = [max_relative_error(o, r) for o, r in zip(outs, ref)]
        results.append(((h, w), errs))
        bad = [i for i, e in enumerate(errs) if not e <= rtol]
        if bad:
            shapes_txt = ", ".join(f"{tuple(o.shape)} vs {tuple(r.shape)}" for o, r in zip(outs, ref))
            raise ExportError(
                f"{what}: onnxruntime differs from PyTorch at {h}x{w} (max relative error "
                f"{max(errs[i] for i in bad):.2e} > {rtol:g} on output(s) {bad}; shapes {shapes_txt}).")
    return results


def graph_op_counts(path: str) -> Dict[str, int]:
    import onnx

    counts: Dict[str, int] = {}
    for node in onnx.load(path, load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def write_metadata(path: str, metadata: Dict[str, str]) -> None:
    """Set ``metadata_props`` entries (key -> string value) of an ONNX file in place."""
    import onnx

    graph = onnx.load(path)
    keep = [p for p in graph.metadata_props if p.key not in metadata]
    del graph.metadata_props[:]
    graph.metadata_props.extend(keep)
    for k, v in metadata.items():
        graph.metadata_props.add(key=str(k), value=str(v))
    onnx.save(graph, path)


def read_metadata(path_or_session) -> Dict[str, str]:
    """``metadata_props`` of an ONNX file (path) or of an onnxruntime session's model."""
    if isinstance(path_or_session, (str, os.PathLike)):
        import onnx

        return {p.key: p.value for p in onnx.load(str(path_or_session), load_external_data=False).metadata_props}
    return dict(path_or_session.get_modelmeta().custom_metadata_map)


def unfolded_batchnorms(path: str) -> List[str]:
    """Names of BatchNormalization nodes of the ONNX graph whose input comes from a Conv."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    conv_outputs = {o for n in graph.node if n.op_type == "Conv" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "BatchNormalization" and n.input[0] in conv_outputs]


def second_check_shape(h: int, w: int) -> Tuple[int, int]:
    """A second size for checking a dynamic export: about 3/4 of the export size, sides not multiples of 32 nor
    of 7 (so every padding / window / rounding path differs from the export size)."""
    def pick(v):
        s = max(33, (3 * v) // 4 + 5)
        while s % 32 == 0 or s % 7 == 0 or s == v:
            s += 1
        return s
    return pick(h), pick(w)


@contextlib.contextmanager
def _quiet_export():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on frozen control flow: the onnxruntime check decides
        yield


def export_onnx(model: nn.Module, path: str, shape: Tuple[int, int], dynamic: bool = False,
                output_names: Optional[Sequence[str]] = None, opset: int = OPSET, in_channels: int = 3,
                check: bool = True, check_shapes: Optional[Sequence[Tuple[int, int]]] = None,
                rtol: float = RTOL, what: str = "the model",
                progress: Optional[Callable[[str], None]] = None,
                inputs: Optional[Sequence[torch.Tensor]] = None, input_names: Optional[Sequence[str]] = None,
                checker: Optional[Callable[[str], Tuple[List[str], List[Tuple[Tuple[int, int], List[float]]]]]] = None,
                metadata: Optional[Dict[str, str]] = None) -> ExportReport:
    """Export ``model`` (eval mode, BN folded on a copy) to ``path`` for inputs ``(1, in_channels, H, W)``.

    ``dynamic``: batch, height and width are dynamic axes, and the check also runs at a second size
    (``check_shapes`` overrides the sizes checked). Raises :class:`ExportError` with the reason when the model
    cannot be exported or onnxruntime does not reproduce PyTorch; ``path`` is then left untouched.

    Models with several inputs (e.g. a detector with its post-processing, fixed size only): ``inputs`` are example
    inputs (the first one the image, ``(1, in_channels, H, W)``) named ``input_names``, and ``checker(path)``
    replaces the output-by-output check: it returns ``(names, [((H, W), [error per name]), ...])`` or raises
    :class:`ExportError`. ``metadata`` (str -> str) is written into the file's ``metadata_props``.
    """
    say = progress or (lambda s: None)
    model = model.eval()
    h, w = int(shape[0]), int(shape[1])
    example = tuple(inputs) if inputs else (torch.randn(1, in_channels, h, w),)
    in_names = list(input_names) if input_names else ["input"] + [f"input{i}" for i in range(1, len(example))]
    if len(in_names) != len(example):
        raise ValueError(f"{len(in_names)} input names for {len(example)} inputs")
    if len(example) > 1 and check and checker is None:
        raise ValueError("a model with several inputs needs a checker (the output-by-output check feeds one input)")
    if dynamic and len(example) > 1:
        raise ValueError("a model with several inputs is exported at a fixed size only (dynamic=False)")
    folded, n_folded = fold_batchnorm(model, example if inputs else None)
    with torch.inference_mode():
        probe = example if inputs else (torch.randn(1, in_channels, FOLD_PROBE_SIZE, FOLD_PROBE_SIZE),)
        n_out = len(_as_tuple(model(*probe)))
    names = list(output_names) if output_names else (["output"] if n_out == 1 else [f"output{i}" for i in range(n_out)])
    if len(names) != n_out:
        raise ValueError(f"{len(names)} output names for {n_out} outputs")
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {"input": {0: "batch", 2: "height", 3: "width"}}
        dynamic_axes.update({n: {0: "batch"} for n in names})
    out_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_export_", suffix=".onnx", dir=out_dir)
    os.close(fd)
    try:
        say(f"exporting ({n_folded} BatchNorms folded, opset {opset}, {'dynamic' if dynamic else 'fixed'} "
            f"{h}x{w})")
        try:
            with _quiet_export(), torch.no_grad(), graph_rewrites(fixed_size=not dynamic):
                torch.onnx.export(folded, example, tmp, dynamo=False, opset_version=opset,
                                  input_names=in_names, output_names=names, dynamic_axes=dynamic_axes,
                                  do_constant_folding=True)
        except Exception as e:  # the exporter raises many types (UnsupportedOperatorError, SymbolicValueError, ...)
            raise ExportError(_explain_export_failure(e, what, opset)) from None
        leftover = unfolded_batchnorms(tmp)
        if leftover:
            raise ExportError(f"{what}: {len(leftover)} BatchNormalization node(s) still follow a Conv after "
                              f"folding ({', '.join(leftover[:3])}); refusing to write an unfolded graph.")
        if metadata:
            write_metadata(tmp, metadata)
        checks: List[Tuple[Tuple[int, int], List[float]]] = []
        check_names = None
        if check and checker is not None:
            say("checking with onnxruntime against the framework's own inference")
            check_names, checks = checker(tmp)
        elif check:
            shapes = list(check_shapes) if check_shapes else [(h, w)] + ([second_check_shape(h, w)] if dynamic else [])
            say("checking with onnxruntime at " + ", ".join(f"{a}x{b}" for a, b in shapes))
            try:
                checks = check_onnx(tmp, model, shapes, in_channels, rtol, what)
            except ExportError as e:
                if dynamic and len(shapes) > 1:
                    raise ExportError(
                        f"{e} This model cannot be exported with dynamic height/width: its graph depends on the "
                        f"input size (traced control flow such as window partitioning, padding or attention-bias "
                        f"tables). Export it without --dynamic, at the size you will run.") from None
                raise
        report = ExportReport(path, opset, dynamic, n_folded, names, checks, graph_op_counts(tmp), check_names)
        os.replace(tmp, path)
        return report
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
