import math
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


@torch.no_grad()
def randomize_model(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every tensor of ``model`` random and well scaled, so that no branch is trivial (values comparisons).

    A model built on the meta device is first materialised on the CPU (building the big variants there is instant,
    their real initialisers take seconds) and its derived index buffers are recomputed. Then: weights
    ``N(0, 0.36/fan_in)`` (a little below variance-preserving, so that activations stay at a trained network's scale
    through 30+ residual blocks: with ``1/fan_in`` EfficientViT-MSRA reaches logits of 1e3-1e4, where float32
    rounding is amplified by saturated softmaxes and no two implementations agree to 1e-4); norm scales
    ``U(0.6, 1.4)``; biases ``N(0, 0.1^2)``; layer scales ``U(0.05, 0.3)`` (their official init, 1e-5, would make
    the blocks identities); attention-bias tables ``N(0, 1)``; BN running means ``N(0, 0.2^2)`` and variances
    ``U(0.5, 2)`` (so that BN is not an identity in eval). Tensors of more than 2^18 elements take their normal
    samples from a pool of 2^20 + 7 at a random offset (drawing 250M samples one by one takes seconds).
    """
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        model = model.to_empty(device="cpu")
        for m in model.modules():
            if hasattr(m, "init_non_persistent_buffers"):
                m.init_non_persistent_buffers()
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(2 ** 20 + 7, generator=g)

    def normal(shape):
        n = math.prod(shape)
        if n <= 2 ** 18:
            return torch.randn(shape, generator=g)
        start = int(torch.randint(pool.numel(), (1,), generator=g))
        return pool.repeat(-(-(start + n) // pool.numel()))[start:start + n].view(shape)

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=g) * (hi - lo) + lo

    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("attention_biases"):
            p.copy_(normal(p.shape))
        elif leaf.startswith("layer_scale") or leaf == "gamma":
            p.copy_(uniform(p.shape, 0.05, 0.3))
        elif p.dim() > 1:
            p.copy_(normal(p.shape) * (0.6 / p[0].numel() ** 0.5))
        elif leaf == "weight":
            p.copy_(uniform(p.shape, 0.6, 1.4))
        else:
            p.copy_(normal(p.shape) * 0.1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(normal(m.running_mean.shape) * 0.2)
            m.running_var.copy_(uniform(m.running_var.shape, 0.5, 2.0))
            m.num_batches_tracked.zero_()
    return model


@pytest.fixture
def randomized():
    return randomize_model


def official_classifier_state_dict(family: str, classifier: torch.nn.Module) -> dict:
    """Our ImageNet classifier's weights renamed to the family's official checkpoint layout (architectures.md key
    layouts): MIT keeps our names; the others drop ``backbone.``; MSRA's distillation head is ``head_dist.``;
    EdgeViT / EfficientFormer heads drop ``head.``."""
    out = {}
    for k, v in classifier.state_dict().items():
        if family == "efficientvit_mit":
            out[k] = v
        elif k.startswith("backbone."):
            out[k[len("backbone."):]] = v
        elif family == "efficientvit_msra":
            out[k.replace("head.head_dist.", "head_dist.")] = v
        else:
            out[k[len("head."):]] = v
    return out


@pytest.fixture
def official_classifier_layout():
    return official_classifier_state_dict


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
