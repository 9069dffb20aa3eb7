"""effvit_plugins.convert over the specs: every family's official files are recognised by its key signature, a file
of one family is refused for another, and convert_file writes both layouts (no framework needed)."""
import re

import pytest
import torch

from effvit_plugins.checkpoint import CheckpointError
from effvit_plugins.convert import D2_BACKBONE_PREFIX, convert_file, convert_official, detect_family
from effvit_plugins.models.spec import families

CLASSIFIER_FAMILIES = [s for s in families() if s.classifier is not None]


@pytest.mark.parametrize("spec", CLASSIFIER_FAMILIES, ids=lambda s: s.key)
def test_official_file_recognised_and_refused_for_another_family(spec, official_classifier_layout):
    official = official_classifier_layout(spec.key, spec.classifier(spec.variants[0]))
    assert detect_family(official) == spec.key
    assert convert_official(official)[0] == spec.key
    other = next(s for s in families() if s.key != spec.key)
    with pytest.raises(CheckpointError, match=f"looks like a {re.escape(spec.title)} checkpoint, not "
                                              f"{re.escape(other.title)}"):
        convert_official(official, other.key)


def test_unrecognised_file_lists_the_family_keys():
    with pytest.raises(CheckpointError, match=", ".join(s.key for s in families())):
        convert_official({"foo.weight": torch.zeros(1)})


def test_convert_file_both_layouts(tmp_path, official_classifier_layout):
    spec = CLASSIFIER_FAMILIES[0]
    core = spec.classifier(spec.variants[0])
    torch.save({"model": official_classifier_layout(spec.key, core)}, tmp_path / "official.pth")
    summary = convert_file(str(tmp_path / "official.pth"), str(tmp_path / "mm" / "ours.pth"))
    assert summary.startswith(f"{spec.title} classification checkpoint")
    mm = torch.load(tmp_path / "mm" / "ours.pth", weights_only=True)
    assert mm["meta"] == {"converted_from": "official.pth", "family": spec.key, "task": "classification"}
    core.load_state_dict(mm["state_dict"], strict=True)  # raises on any missing / unexpected key
    convert_file(str(tmp_path / "official.pth"), str(tmp_path / "d2.pth"), to="detectron2")
    d2 = torch.load(tmp_path / "d2.pth", weights_only=True)
    assert d2["family"] == spec.key and set(d2["model"]) == {
        D2_BACKBONE_PREFIX + k[len("backbone."):] for k in core.state_dict() if k.startswith("backbone.")}
    with pytest.raises(ValueError, match="valid: mm, detectron2"):
        convert_file(str(tmp_path / "official.pth"), str(tmp_path / "x.pth"), to="onnx")
