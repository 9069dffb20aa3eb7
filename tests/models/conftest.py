"""Fixtures of the per-family core tests (thin wrappers over :mod:`effvit_plugins.testing`).

What proves that our names are the official ones and that the values are the official computation (timm's own
official -> timm filter, our key map into timm, or an independent re-derivation of the official forward) is said at
the top of each family's test file. In every case the tensors are loaded strictly and nothing is reordered in the
tests.
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
