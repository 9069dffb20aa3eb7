"""The backbone contract, checked the same way for every registered family and every variant (modelled on timm's
tests/test_models.py): feature maps and their metadata, out_indices, frozen_stages (mmdet meaning, through the
OpenMMLab adapter after init_weights), norm_eval, drop_path, empty batches, odd sizes with real arithmetic,
input-channel and arch errors, pickling, forward_intermediates and gradient checkpointing (the constructor's
``with_cp=True`` and ``set_grad_checkpointing``).

The checks themselves are :mod:`effvit_plugins.testing` (``check_*``; :func:`~effvit_plugins.testing.
check_backbone_contract` runs them all for one family, e.g. one defined in a test). This file parametrises them over
:func:`effvit_plugins.models.spec.families` at collection time: every built-in family, every variant where the
check is per variant, else the smallest one (``spec.variants[0]``).

Family-specific behaviour (official numbers, timm parity, checkpoints, attention details) lives in the per-family
files next to this one.
"""
import dataclasses

import pytest
import torch

from effvit_plugins import testing
from effvit_plugins.models.spec import families

FAMILIES = families()
VARIANTS = [(spec, v) for spec in FAMILIES for v in spec.variants]
VARIANT_IDS = [f"{spec.key}-{v}" for spec, v in VARIANTS]
SMALL = [(spec, spec.variants[0]) for spec in FAMILIES]
SMALL_IDS = [spec.key for spec in FAMILIES]


@pytest.fixture(autouse=True, scope="module")
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("spec,variant", VARIANTS, ids=VARIANT_IDS)
def test_feature_info_and_real_forward_at_odd_size(spec, variant):
    testing.check_feature_info_and_odd_size(spec, variant)


@pytest.mark.parametrize("spec,variant", SMALL, ids=SMALL_IDS)
def test_real_forward_at_large_odd_size(spec, variant):
    testing.check_large_odd_size(spec, variant)


@pytest.mark.parametrize("spec,variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_empty_batch(spec, variant, training):
    testing.check_empty_batch(spec, variant, training)


@pytest.mark.parametrize("spec,variant", SMALL, ids=SMALL_IDS)
def test_out_indices(spec, variant):
    testing.check_out_indices(spec, variant)


@pytest.mark.parametrize("spec,variant", VARIANTS, ids=VARIANT_IDS)
def test_frozen_stages_through_adapter_after_init_weights(spec, variant, tmp_path):
    testing.check_frozen_stages_through_adapter(spec, variant, tmp_path)


@pytest.mark.parametrize("spec,variant", SMALL, ids=SMALL_IDS)
def test_frozen_stages_range(spec, variant):
    testing.check_frozen_stages_range(spec, variant)


@pytest.mark.parametrize("spec,variant", SMALL, ids=SMALL_IDS)
def test_norm_eval(spec, variant):
    testing.check_norm_eval(spec, variant)


@pytest.mark.parametrize("spec,variant", SMALL, ids=SMALL_IDS)
def test_drop_path(spec, variant):
    """Stochastic depth where the backbone has ``drop_path_rate``; a backbone without it (the official
    EfficientViT-MIT has no stochastic depth) rejects the argument."""
    testing.check_drop_path(spec, variant)


@pytest.mark.parametrize("spec,variant", SMALL, ids=SMALL_IDS)
def test_wrong_input_channels(spec, variant):
    testing.check_input_channels(spec, variant)


@pytest.mark.parametrize("spec", FAMILIES, ids=SMALL_IDS)
def test_arch_required_unknown_and_dict(spec):
    testing.check_arch_errors(spec)


@pytest.mark.parametrize("spec,variant", SMALL, ids=SMALL_IDS)
def test_pickle_and_forward_intermediates(spec, variant):
    testing.check_pickle_and_forward_intermediates(spec, variant)


@pytest.mark.parametrize("spec,variant", SMALL, ids=SMALL_IDS)
def test_grad_checkpointing_same_result(spec, variant):
    """``with_cp=True`` / ``set_grad_checkpointing(True)``: blocks recomputed in backward, same outputs and
    gradients."""
    testing.check_grad_checkpointing(spec, variant)


def test_the_contract_runs_for_a_family_through_one_call(tmp_path):
    """:func:`check_backbone_contract` (what a new family's test calls) runs the checks, and they fail on a family
    whose spec does not describe its backbone: here feature strides that are not the backbone's."""
    spec = FAMILIES[0]
    testing.check_backbone_contract(spec, tmp_path=tmp_path, with_adapter=False)
    wrong = dataclasses.replace(spec, feature_strides=tuple(2 * s for s in spec.feature_strides))
    with pytest.raises(AssertionError):
        testing.check_feature_info_and_odd_size(wrong, spec.variants[0])
