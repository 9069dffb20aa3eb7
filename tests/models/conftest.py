"""Helpers shared by the per-family core tests: our classifier's state dict in the official layout, timm models
loaded from it, parameter/MAC counts against published figures.

What checks that our names are the official ones and that the values are the official computation:

* EfficientFormer V1: timm's own ``checkpoint_filter_fn`` (official -> timm), live in timm 1.0.31;
* EfficientViT-MSRA: timm's own official -> timm filter, kept commented out in timm 1.0.31 and executed from
  timm's installed source (test_efficientvit_msra.py says how and why that is sound);
* EfficientViT-MIT and EfficientFormer V2: our key maps (official -> timm names, in their test files): timm has no
  official -> timm filter for them; the maps only rename (V2: and reshape the layer scales);
* EdgeViT (not in timm): the official key layout and a plain-op re-derivation of the official forward, written in
  test_edgevit.py; the EfficientViT SegHead likewise in tests/mm/test_efficientvit_seg.py.

In every case the tensors are loaded strictly and nothing is reordered in the tests.
"""
import re
from typing import Callable, Dict, Iterable, Optional, Tuple

import pytest
import torch
import torch.nn as nn

import timm

from effvit_plugins.utils.complexity import count_macs, count_params


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on the shared 2-core CI machine, OpenMP threads competing with other processes make
    small CPU forwards many times slower. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def official_state_dict(model: nn.Module, convert: Callable, strip_backbone: bool = True,
                        head_roots: Iterable[str] = ()) -> Dict[str, torch.Tensor]:
    """Our classifier's tensors under the official checkpoint names, as an official release file holds them.

    Our names are the official ones up to the ``backbone.`` prefix (``strip_backbone``; EfficientViT-MIT's official
    names have it too) and, for the head keys whose first component is in ``head_roots``, the ``head.`` prefix. The
    derived index buffers (``attention_bias_idxs``), which the official files store and some of our models keep
    non-persistent, are included. Checked here: the family's ``convert_official_checkpoint`` maps the result back
    onto exactly our state dict (so the renaming above is its inverse and nothing else).
    """
    head_roots = tuple(head_roots)

    def official_name(k):
        if strip_backbone and k.startswith("backbone."):
            return k[len("backbone."):]
        if k.startswith("head.") and k.split(".")[1] in head_roots:
            return k[len("head."):]
        return k

    ours = model.state_dict()
    out = {}
    for prefix, m in model.named_modules():  # module order, each derived buffer next to its table
        for n, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is not None:
                k = f"{prefix}.{n}" if prefix else n
                out[official_name(k)] = ours.get(k, t)
    back = convert(dict(out))
    assert back.keys() == ours.keys(), sorted(set(back) ^ set(ours))[:8]
    assert all(v.shape == back[k].shape and (v.is_meta or torch.equal(v, back[k])) for k, v in ours.items())
    return out


def timm_model_from(name: str, state_dict: Dict[str, torch.Tensor], **kwargs) -> nn.Module:
    """timm's ``name`` with ``state_dict`` loaded **strictly**, in eval mode. Built on the meta device and given the
    tensors of ``state_dict`` themselves (no initialisation, no copy); its non-persistent index buffers are then
    allocated and computed by timm (``init_non_persistent_buffers``)."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    result = model.load_state_dict(state_dict, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    for m in model.modules():
        meta = {n: b for n, b in m._buffers.items() if b is not None and b.is_meta}
        for n, b in meta.items():
            m._buffers[n] = torch.empty_like(b, device="cpu")
        if meta:
            m.init_non_persistent_buffers()
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    return model.eval()


def max_logit_differences(ours: nn.Module, ref: nn.Module, x: torch.Tensor, atol: float = 1e-4,
                          inference_path: bool = True) -> Dict[str, float]:
    """max |ours - ref| of the eval logits, asserted below ``atol``, with ours on the ``'training_graph'``
    (autograd enabled: plain conv -> BN) and, with ``inference_path``, on the ``'inference'`` path (no autograd:
    BN folded, inference caches, channels-last; folding the big variants' weights takes seconds)."""
    ours.eval()
    ref.eval()
    with torch.no_grad():
        expected = ref(x)
    diffs = {}
    for path in ("inference", "training_graph") if inference_path else ("training_graph",):
        with torch.set_grad_enabled(path == "training_graph"):
            diffs[path] = (ours(x).detach() - expected).abs().max().item()
    assert expected.abs().max() > 0.1, "trivial logits: the comparison would prove nothing"
    print(f"max |ours - {type(ref).__name__}| = {diffs} (logits up to {expected.abs().max().item():.3g})")
    assert all(d < atol for d in diffs.values()), diffs
    return diffs


def figure(text: str) -> Tuple[float, float]:
    """A published or measured figure as written (``'3.5M'``, ``'0.100G'``) -> (value, half-width of its rounding):
    ``'3.5M'`` is 3.5e6 +- 0.05e6, ``'24M'`` 24e6 +- 0.5e6."""
    m = re.fullmatch(r"(\d+)(?:\.(\d+))?([KMG])", text)
    assert m, f"not a figure: {text!r}"
    unit = {"K": 1e3, "M": 1e6, "G": 1e9}[m[3]]
    decimals = len(m[2] or "")
    return float(f"{m[1]}.{m[2] or 0}") * unit, 0.5 * 10.0 ** -decimals * unit


def assert_complexity(model: nn.Module, params: str, macs: str, timm_name: Optional[str] = None,
                      published_count: Callable[[nn.Module], int] = count_params) -> None:
    """``model`` (an ImageNet classifier, built on the meta device): its parameter count equals timm's own count for
    ``timm_name`` exactly; ``published_count(model)`` is within the rounding of ``params`` and its MACs at 224x224
    within the rounding of ``macs`` (see :func:`figure`)."""
    n = count_params(model)
    if timm_name is not None:
        with torch.device("meta"):
            assert n == count_params(timm.create_model(timm_name)), "parameter count differs from timm's"
    value, half_width = figure(params)
    assert abs(published_count(model) - value) <= half_width, (published_count(model), params)
    value, half_width = figure(macs)
    n_macs = count_macs(model, (1, 3, 224, 224))
    assert abs(n_macs - value) <= half_width, (n_macs, macs)


def build_on_meta(cls, *args, **kwargs) -> nn.Module:
    """``cls(*args, **kwargs)`` built on the meta device (instant; for shapes, counts and :func:`randomize_model`)."""
    with torch.device("meta"):
        return cls(*args, **kwargs)


@pytest.fixture(scope="session")
def on_meta():
    return build_on_meta


@pytest.fixture(scope="session")
def complexity():
    return assert_complexity


@pytest.fixture(scope="session")
def to_official():
    return official_state_dict


@pytest.fixture(scope="session")
def timm_from():
    return timm_model_from


@pytest.fixture(scope="session")
def logits_agree():
    return max_logit_differences
