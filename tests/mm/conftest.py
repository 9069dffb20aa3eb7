"""Helpers shared by the mm tests: the framework-free core of a registered backbone, and our EfficientFormer dense
model (segmentor / detector) rewritten in the layout of the official mmseg 0.x / mmdet 2.x checkpoints."""
import math

import pytest
import torch


def core_backbone(backbone_cfg):
    """The framework-free core of a registered backbone, with the config's arguments."""
    from effvit_plugins.registry import MODELS

    cls = MODELS.get(backbone_cfg["type"])
    core = next(c for c in cls.__mro__[1:] if c.__module__.startswith("effvit_plugins.models."))
    return core(**{k: v for k, v in backbone_cfg.items() if k not in ("type", "init_cfg")})


def official_ef_dense_state_dict(model, backbone_cfg):
    """Our EfficientFormer segmentor / detector state dict in the layout of the official dense checkpoints
    (architectures.md §4.4): every dense attention also stores the ImageNet table ``attention_biases`` (unused;
    sized for 224) and the index buffers ``attention_bias_idxs`` / ``attention_bias_idxs_seg``; neck and head
    names are the upstream ones (mmseg 0.x = 1.x, mmdet 2.x = 3.x)."""
    imagenet = core_backbone({**backbone_cfg, "seg_resolution": None}).state_dict()  # tables for 224
    official = {}
    g = torch.Generator().manual_seed(0)
    for k, v in model.state_dict().items():
        official[k] = v
        if k.endswith(".attention_biases_seg"):
            name = k[len("backbone."):-len("_seg")]
            table = imagenet[name]

            def queries(n):  # the stage-4 downsampling attention queries a half-resolution grid
                return n if ".attn." not in k else ((math.isqrt(n) + 1) // 2) ** 2

            official[k[:-len("_seg")]] = torch.randn(table.shape, generator=g)
            for suffix, n in (("attention_bias_idxs", table.shape[1]), ("attention_bias_idxs_seg", v.shape[1])):
                official[k.rsplit(".", 1)[0] + "." + suffix] = torch.randint(0, n, (queries(n), n), generator=g)
    return official


@pytest.fixture
def ef_dense_roundtrip(bn_randomizer, load_tool, capsys, tmp_path):
    """``run(cfg, meta) -> (src, fresh, official, printed)``: the config's model with random statistics, bias tables
    and layer scales (``src``) written in the official layout (``official``, saved with ``meta``), converted by
    tools/convert_checkpoint.py (``printed``: what it said) and loaded strictly into a new model (``fresh``)."""
    def run(cfg, meta):
        from effvit_plugins.mm.tools_common import build_model_from_cfg

        torch.manual_seed(0)
        src = build_model_from_cfg(cfg)
        bn_randomizer(src)
        for name, p in src.named_parameters():  # non-trivial dense bias tables and layer scales
            if "attention_biases" in name or "layer_scale" in name:
                p.data.normal_()
        official = official_ef_dense_state_dict(src, cfg.model.backbone)
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
