"""Fixtures of the per-family core tests (thin wrappers over :mod:`effvit_plugins.testing`).

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
import pytest
import torch

from effvit_plugins import testing


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on the shared 2-core CI machine, OpenMP threads competing with other processes make
    small CPU forwards many times slower. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def on_meta():
    return testing.build_on_meta


@pytest.fixture(scope="session")
def complexity():
    return testing.assert_complexity


@pytest.fixture(scope="session")
def to_official():
    """``f(classifier)``: :func:`effvit_plugins.testing.official_state_dict`."""
    return testing.official_state_dict


@pytest.fixture(scope="session")
def timm_from():
    return testing.timm_model_from


@pytest.fixture(scope="session")
def logits_agree():
    return testing.max_logit_differences
