import os
import re
import sys

# OpenMP threads sleep instead of spinning when idle: the tests run tools in subprocesses next to this process,
# and on a 2-core machine spinning threads of one process make the other's forward passes many times slower.
# (Set before torch starts its OpenMP runtime; subprocesses inherit it.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
if "OMP_NUM_THREADS" not in os.environ:  # an explicit OMP_NUM_THREADS wins (e.g. 1 on a shared machine)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def bn_randomizer():
    """``f(model, seed=0)``: random BatchNorm statistics/affines and attention-bias tables, other weights kept
    (:func:`effvit_plugins.testing.randomize_model` with ``weights=False``)."""
    from effvit_plugins.testing import randomize_model

    return lambda model, seed=0: randomize_model(model, seed, weights=False)


@pytest.fixture
def randomized():
    """:func:`effvit_plugins.testing.randomize_model`: every tensor random and well scaled."""
    from effvit_plugins.testing import randomize_model

    return randomize_model


@pytest.fixture
def official_classifier_layout():
    """``f(family, classifier)``: the classifier's tensors under the family's official checkpoint names
    (:func:`effvit_plugins.testing.official_state_dict`)."""
    from effvit_plugins.models.spec import family_of
    from effvit_plugins.testing import official_state_dict

    def layout(family: str, classifier: torch.nn.Module) -> dict:
        assert family_of(classifier.backbone).key == family, (family, type(classifier).__name__)
        return official_state_dict(classifier)
    return layout


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


def _load_tool(name: str):
    """``tools/<name>.py`` as a module (the tools are scripts, not a package), to call its ``main(argv)``; each call
    of ``main`` sees mmengine's visualizers as a new process would (:func:`effvit_plugins.testing.fresh_visualizers`)."""
    import functools
    import importlib.util

    from effvit_plugins.testing import fresh_visualizers

    spec = importlib.util.spec_from_file_location(f"effvit_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    main = getattr(module, "main", None)
    if main is not None:
        @functools.wraps(main)
        def main_in_fresh_process_state(*args, **kwargs):
            with fresh_visualizers():
                return main(*args, **kwargs)
        module.main = main_in_fresh_process_state
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
