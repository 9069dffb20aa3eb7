"""Latency measurement shared by ``tools/benchmark.py`` and ``tools/paper_tables.py``: interleaved timing, PyTorch
eager against onnxruntime, and the allocator setting both use (framework-free)."""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..deploy.onnx import export_onnx, ort_session


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory in the process (no ``munmap`` / trim of blocks up to 1 GiB) so that PyTorch eager,
    which has no CPU caching allocator, is not charged for page-faulting its large activations again at every
    forward while onnxruntime reuses its arena: at 1024x2048 that alone made the B1 segmentor's eager forward
    0.85-1.9 s instead of 0.55 s on the 2-core machine. Process-wide; returns False where it does not apply
    (not glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_trim_threshold, ctypes.c_int(1 << 30)) and mallopt(m_mmap_threshold, ctypes.c_int(1 << 30)))


def time_interleaved(fns: Sequence[Callable[[], object]], repeat: int = 5, warmup: int = 1,
                     sync: Optional[Callable[[], None]] = None) -> List[float]:
    """Median seconds of each zero-argument callable, timed alternately (a, b, a, b, ...) after warm-up, so that
    every callable sees the same machine state (clock, caches, other processes). ``sync`` runs after each call
    and inside its timing (e.g. ``torch.cuda.synchronize`` for CUDA work)."""
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(warmup):
        for fn in fns:
            fn()
    if sync is not None:
        sync()
    for _ in range(max(1, repeat)):
        for fn, acc in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            if sync is not None:
                sync()
            acc.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def torch_vs_onnxruntime(model: nn.Module, shape: Tuple[int, int], repeat: int = 5, warmup: int = 1,
                         threads: Optional[int] = None, workdir: Optional[str] = None,
                         what: str = "the model", references: Sequence[Callable[[torch.Tensor], object]] = ()
                         ) -> Tuple[float, float, float, List[float]]:
    """Median latency (seconds) of ``model`` in PyTorch eager (inference mode) and in onnxruntime (CPU, all graph
    optimisations) on one ``(1, 3, H, W)`` input, timed interleaved in this process; the export's max relative
    error; and the medians of the ``references`` (other callables of the same input, e.g. another
    implementation), timed in the same interleaved rounds. The ONNX file lives in a temporary folder."""
    x = torch.randn(1, 3, int(shape[0]), int(shape[1]))
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        path = os.path.join(d, "model.onnx")
        report = export_onnx(model, path, shape, dynamic=False, what=what)
        sess = ort_session(path, threads)
        feed = {sess.get_inputs()[0].name: x.numpy()}
        fns = [lambda: model(x), lambda: sess.run(None, feed)] + [lambda f=f: f(x) for f in references]
        with torch.inference_mode():
            t_torch, t_ort, *t_refs = time_interleaved(fns, repeat, warmup)
        del sess
    return t_torch, t_ort, report.max_rel_error, t_refs
