"""Fixtures shared by the mm tests (helpers: :mod:`effvit_plugins.testing`)."""
import pytest
import torch

from effvit_plugins.testing import core_backbone, official_dense_state_dict, randomize_model


@pytest.fixture
def ef_dense_roundtrip(load_tool, capsys, tmp_path):
    """``run(cfg, meta) -> (src, fresh, official, printed)``: the config's model with random statistics, bias tables
    and layer scales (``src``) written in the official layout (``official``, saved with ``meta``), converted by
    tools/convert_checkpoint.py (``printed``: what it said) and loaded strictly into a new model (``fresh``)."""
    def run(cfg, meta):
        from effvit_plugins.mm.tools_common import build_model_from_cfg

        torch.manual_seed(0)
        src = randomize_model(build_model_from_cfg(cfg))  # non-trivial statistics, bias tables, layer scales
        official = official_dense_state_dict(src, cfg.model.backbone)
        extra = set(official) - set(src.state_dict())
        assert extra and all(k.endswith(("attention_biases", "attention_bias_idxs", "attention_bias_idxs_seg"))
                             for k in extra)
        torch.save({"state_dict": official, "meta": meta}, tmp_path / "official.pth")
        capsys.readouterr()
        assert load_tool("convert_checkpoint").main([str(tmp_path / "official.pth"), str(tmp_path / "ours.pth")]) == 0
        printed = capsys.readouterr().out
        torch.manual_seed(1)
        fresh = build_model_from_cfg(cfg)
        res = fresh.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True)["state_dict"], strict=True)
        assert not res.missing_keys and not res.unexpected_keys
        return src, fresh, official, printed
    return run


@pytest.fixture(scope="session")
def core_backbone_of():
    return core_backbone
