import os
import re
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
if "OMP_NUM_THREADS" not in os.environ:  # an explicit OMP_NUM_THREADS wins (e.g. 1 on a shared machine)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def randomize_bn_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every norm layer non-trivial statistics/affine params so BN is not the identity in eval."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.fixture
def bn_randomizer():
    return randomize_bn_stats


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


def _load_tool(name: str):
    """``tools/<name>.py`` as a module (the tools are scripts, not a package), to call its ``main(argv)``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"effvit_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_tool():
    return _load_tool


# --- CI: a skipped test is a failure, unless it was skipped because this machine has no GPU -------------------
# CI runs `bash .ci/run` with CI=true. A skip there would hide a feature that silently stopped being tested (a
# missing dependency, a missing file), so it fails the run; the one accepted reason is the hardware.
_GPU_WORD = re.compile(r"\b(gpus?|cuda)\b", re.I)
_MISSING_WORD = re.compile(r"\b(no|not|without|missing|needs?|requires?|unavailable)\b", re.I)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr  # (path, line, msg)
    return str(reason).removeprefix("Skipped: ")


def skip_allowed_in_ci(reason: str) -> bool:
    """True when the reason says that a GPU / CUDA is missing (e.g. 'needs a GPU', 'CUDA not available')."""
    return bool(_GPU_WORD.search(reason) and _MISSING_WORD.search(reason))


def _fail_skip_in_ci(report) -> None:
    if not (in_ci() and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = skip_reason(report)
    if skip_allowed_in_ci(reason):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI ({reason}). A skip in CI is a failure unless its reason is a missing "
                       f"GPU/CUDA: install the missing piece (make setup) or fix the test.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # a module-level pytest.skip / importorskip skips at collection
    _fail_skip_in_ci(outcome.get_result())
