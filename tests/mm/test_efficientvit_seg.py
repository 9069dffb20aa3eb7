"""EfficientViT (MIT) + SegHead in mmseg: published params/MACs for every pair, the SegHead's values against a
plain-op re-derivation of the official SegHead, inference at odd sizes, official checkpoint conversion, pretrained
init, clear errors."""
import glob
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config, model_complexity
from effvit_plugins.utils.published import config_name, official_complexity, rows

CFG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "efficientvit_mit")
# (params M, MACs G): Cityscapes at 1024x2048, ADE20K at 512x512; params measured from the official code, MACs as
# the official model zoo prints them (rounded: the 2% tolerance covers it) -- effvit_plugins/data/published_results.json
TARGETS = {(row["variant"], row["dataset"]): tuple(f.value for f in official_complexity("segmentation")[config_name(row)])
           for row in rows("segmentation") if row["family"] == "efficientvit_mit"}


def cfg_path(variant, dataset):
    (path,) = glob.glob(os.path.join(CFG_DIR, f"*efficientvit-{variant}_*_{dataset}-*.py"))
    return path


def test_one_config_per_published_pair():
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CFG_DIR, "efficientvit-seghead_*.py")))
    assert len(names) == len(TARGETS)
    for n in names:  # OpenMMLab scheme: {algorithm}_{backbone}_{gpus}xb{batch}-{schedule}_{dataset}-{res}.py
        assert re.fullmatch(r"efficientvit-seghead_efficientvit-[bl]\d_8xb2-160k_(cityscapes-1024x2048|"
                            r"ade20k-512x512)\.py", n), n


@pytest.mark.parametrize("variant,dataset", sorted(TARGETS))
def test_segmentor_params_and_macs_match_official(variant, dataset):
    cfg = load_config(cfg_path(variant, dataset))
    with torch.device("meta"):
        model = build_model_from_cfg(cfg, device="meta")
    shape = (1024, 2048) if dataset == "cityscapes" else (512, 512)
    params, macs = model_complexity(model, shape)
    p_ref, m_ref = TARGETS[(variant, dataset)]
    assert abs(params / 1e6 - p_ref) / p_ref < 0.01, (params, p_ref)
    assert abs(macs / 1e9 - m_ref) / m_ref < 0.02, (macs, m_ref)


def test_get_flops_cli(repo_root):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "tools/get_flops.py", "configs/efficientvit_cityscapes.py", "--shape",
                        "1024", "2048"], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    params = float(re.search(r"Params: ([\d.]+) M", r.stdout).group(1))
    macs = float(re.search(r"MACs: ([\d.]+) G", r.stdout).group(1))
    p_ref, m_ref = TARGETS[("b1", "cityscapes")]
    assert abs(params - p_ref) / p_ref < 0.01 and abs(macs - m_ref) / m_ref < 0.02, r.stdout


# ------------------------------------------------------------------------------------------------------------
def official_seg_state_dict(model):
    """Our mmseg state dict renamed to the official EfficientViT seg layout (the state dict of
    mit-han-lab/efficientvit efficientvit/models/efficientvit/seg.py: ``backbone.*`` and ``head.*``)."""
    out = {}
    has_expand = model.decode_head.final_expand is not None
    for k, v in model.state_dict().items():
        if k.startswith("backbone."):
            out[k] = v
        elif k.startswith("decode_head.final_expand."):
            out["head.output_ops.0.op_list.0." + k[len("decode_head.final_expand."):]] = v
        elif k.startswith("decode_head.conv_seg."):
            out[f"head.output_ops.0.op_list.{1 if has_expand else 0}.conv." + k.split(".")[-1]] = v
        elif k.startswith("decode_head."):
            out["head." + k[len("decode_head."):]] = v
    return out


# ------------------------------------------------------------------------------------------------------------
# The SegHead's values: the official SegHead (mit-han-lab/efficientvit, efficientvit/models/efficientvit/seg.py, with
# the blocks of efficientvit/models/nn/ops.py) re-derived with plain torch.nn.functional ops on the official
# checkpoint names, compared with our mmseg decode head through an EncoderDecoder built from our configs.
# ------------------------------------------------------------------------------------------------------------
# The official settings (efficientvit/models/efficientvit/seg.py, efficientvit_seg_b0 ... _l2; acts and BN eps of the
# B / L series: efficientvit/models/efficientvit/backbone.py and seg_model_zoo.py), written out
# independently of SEG_HEAD_SETTINGS and of the configs.
OFFICIAL_SEG_HEADS = {
    ("b0", "cityscapes"): dict(head_width=32, head_depth=1, expand_ratio=4, middle_op="mbconv", final_expand=4,
                               num_classes=19, act="hswish", eps=1e-5),
    ("l1", "ade20k"): dict(head_width=128, head_depth=3, expand_ratio=4, middle_op="fmbconv", final_expand=8,
                           num_classes=150, act="gelu", eps=1e-7),
}
ACTS = {"hswish": F.hardswish, "gelu": lambda x: F.gelu(x, approximate="tanh")}


def official_seg_head(sd, stage2, stage3, stage4, s):
    """The official SegHead on the backbone's stride-8/16/32 maps, from an official-layout state dict ``sd``.

    Inputs stage4, stage3, stage2 (``input_ops.0/1/2``): 1x1 ConvLayer (no bias, BN, no act), then for the coarse
    two the official UpSampleLayer: bicubic, fixed factor 4 / 2, align_corners False (exact only when H, W are
    multiples of 32, as the official model requires); merged by a sum. ``middle``: ``head_depth`` residual blocks,
    MBConv (1x1 expand + act, depth-wise 3x3 + act, 1x1, BN everywhere, no biases) or FusedMBConv (3x3 expand +
    act, 1x1). Output: the optional ``final_expand`` 1x1 ConvLayer (BN + act), then the 1x1 classifier conv with
    bias and no norm. Every ``head.*`` tensor of ``sd`` must be used, with the official shape.
    """
    used = set()
    w, act = s["head_width"], ACTS[s["act"]]

    def conv_layer(x, p, out, k, act_fn=None, groups=1, norm=True, bias=False):
        weight = sd[p + ".conv.weight"]
        assert weight.shape == (out, x.shape[1] // groups, k, k), (p, weight.shape)
        assert (p + ".conv.bias" in sd) == bias, p
        x = F.conv2d(x, weight, sd.get(p + ".conv.bias"), padding=k // 2, groups=groups)
        used.update({p + ".conv.weight", p + ".conv.bias"} & sd.keys())
        if norm:
            names = [f"{p}.norm.{n}" for n in ("running_mean", "running_var", "weight", "bias")]
            x = F.batch_norm(x, *(sd[n] for n in names), training=False, eps=s["eps"])
            used.update(names + [f"{p}.norm.num_batches_tracked"])
        return act_fn(x) if act_fn is not None else x

    x = conv_layer(stage4, "head.input_ops.0.op_list.0", w, 1)
    x = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    y = conv_layer(stage3, "head.input_ops.1.op_list.0", w, 1)
    x = x + F.interpolate(y, scale_factor=2, mode="bicubic", align_corners=False)
    x = x + conv_layer(stage2, "head.input_ops.2", w, 1)
    mid = round(w * s["expand_ratio"])
    for i in range(s["head_depth"]):
        p = f"head.middle.op_list.{i}.main"
        if s["middle_op"] == "mbconv":
            h = conv_layer(x, p + ".inverted_conv", mid, 1, act)
            h = conv_layer(h, p + ".depth_conv", mid, 3, act, groups=mid)
        else:
            h = conv_layer(x, p + ".spatial_conv", mid, 3, act)
        x = x + conv_layer(h, p + ".point_conv", w, 1)
    ops = "head.output_ops.0.op_list"
    if s["final_expand"] is not None:
        x = conv_layer(x, f"{ops}.0", w * s["final_expand"], 1, act)
    x = conv_layer(x, f"{ops}.{int(s['final_expand'] is not None)}", s["num_classes"], 1, norm=False, bias=True)
    assert used == {k for k in sd if k.startswith("head.")}, sorted({k for k in sd if k.startswith("head.")} - used)
    return x


@pytest.mark.parametrize("variant,dataset", sorted(OFFICIAL_SEG_HEADS))
def test_seghead_values_match_the_official_seghead(variant, dataset, randomized):
    """At 64x96 and 128x256, on the inference path (eval, no autograd: BN folded, channels-last) and on the training
    graph (eval BN, autograd enabled), with random weights and BN statistics (BN is not an identity)."""
    from effvit_plugins.models.efficientvit_mit import convert_official_checkpoint

    settings = OFFICIAL_SEG_HEADS[(variant, dataset)]
    model = randomized(build_model_from_cfg(load_config(cfg_path(variant, dataset))), seed=5).eval()
    assert model.backbone.out_strides == [8, 16, 32]
    assert {m.eps for m in model.decode_head.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {settings["eps"]}
    official = official_seg_state_dict(model)
    assert convert_official_checkpoint(official).keys() == model.state_dict().keys()
    feats = []
    model.backbone.register_forward_hook(lambda module, args, out: feats.append([f.detach() for f in out]))
    diffs = {}
    for h, w in ((64, 96), (128, 256)):
        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        for path in ("inference", "training_graph"):
            feats.clear()
            with torch.set_grad_enabled(path == "training_graph"):
                out = model(x, mode="tensor").detach()
            with torch.no_grad():
                ref = official_seg_head(official, *feats[0], settings)
            assert out.shape == ref.shape == (1, settings["num_classes"], h // 8, w // 8)
            assert ref.abs().max() > 0.1  # not a trivial comparison
            diffs[(h, w, path)] = (out - ref).abs().max().item()
    print(f"{variant} {dataset}: max |ours - official SegHead| = {diffs}")
    assert all(d < 1e-4 for d in diffs.values()), diffs


@pytest.fixture(scope="module")
def b0_city():
    cfg = load_config(cfg_path("b0", "cityscapes"))
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg)
    return cfg, model


def run_convert(repo_root, *argv):
    """tools/convert_checkpoint.py main() in-process (the CLI itself is run once by test_convert_cli)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("convert_checkpoint", os.path.join(repo_root, "tools",
                                                                                     "convert_checkpoint.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main([str(a) for a in argv])


@pytest.mark.parametrize("variant,dataset,wrapper", [("b0", "cityscapes", "state_dict"), ("l1", "ade20k", "model"),
                                                     ("b1", "ade20k", None), ("l2", "cityscapes", "state_dict")])
def test_convert_official_seg_checkpoint_exact(tmp_path, repo_root, wrapper, variant, dataset):
    cfg = load_config(cfg_path(variant, dataset))
    src_model = build_model_from_cfg(cfg)
    official = official_seg_state_dict(src_model)
    assert any(k.startswith("head.output_ops.0.op_list.") for k in official)
    src = tmp_path / "official.pt"
    torch.save({wrapper: official} if wrapper else official, src)
    dst = tmp_path / "converted.pth"
    assert run_convert(repo_root, src, dst) == 0
    fresh = build_model_from_cfg(cfg)
    sd = torch.load(dst, weights_only=True)["state_dict"]
    res = fresh.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(fresh(x, mode="tensor"), src_model(x, mode="tensor"))


def test_convert_cli(tmp_path, repo_root):
    import subprocess
    import sys
    from effvit_plugins.models.efficientvit_mit import EfficientViTMITClassifier
    torch.save({"state_dict": EfficientViTMITClassifier("b0").state_dict()}, tmp_path / "b0_cls.pt")
    r = subprocess.run([sys.executable, "tools/convert_checkpoint.py", str(tmp_path / "b0_cls.pt"),
                        str(tmp_path / "out.pth")], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "EfficientViT (MIT) classification checkpoint" in r.stdout, r.stderr
    sd = torch.load(tmp_path / "out.pth", weights_only=True)["state_dict"]
    res = EfficientViTMITClassifier("b0").load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "x.pt")
    r = subprocess.run([sys.executable, "tools/convert_checkpoint.py", str(tmp_path / "x.pt"), str(tmp_path / "y")],
                       cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Could not recognise" in r.stderr and "Traceback" not in r.stderr


def test_pretrained_init_cfg_loads_official_imagenet_file(tmp_path):
    from mmseg.registry import MODELS
    from effvit_plugins.models.efficientvit_mit import EfficientViTMITClassifier
    cls = EfficientViTMITClassifier("b0")
    torch.save({"state_dict": cls.state_dict()}, tmp_path / "efficientvit_b0_r224.pt")
    bb = MODELS.build(dict(type="EfficientViTMIT", arch="b0", out_indices=(2, 3, 4),
                           init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "efficientvit_b0_r224.pt"))))
    bb.init_weights()
    ref = {k[len("backbone."):]: v for k, v in cls.state_dict().items() if k.startswith("backbone.")}
    for k, v in bb.state_dict().items():
        assert torch.equal(v, ref[k]), k
    # nothing matching -> loud error, nothing loaded
    torch.save({"state_dict": {"foo.weight": torch.zeros(3)}}, tmp_path / "other.pt")
    bad = MODELS.build(dict(type="EfficientViTMIT", arch="b0",
                            init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "other.pt"))))
    with pytest.raises(Exception, match="None of the 1 tensors"):
        bad.init_weights()
    # wrong variant -> shape mismatch error
    bad2 = MODELS.build(dict(type="EfficientViTMIT", arch="b1",
                             init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "efficientvit_b0_r224.pt"))))
    with pytest.raises(Exception, match="Shape mismatch.*wrong variant"):
        bad2.init_weights()


class Evil:
    """Any non-tensor Python object inside a weight file."""


def test_pretrained_file_with_pickled_objects_is_refused(tmp_path):
    from effvit_plugins.checkpoint import CheckpointError, load_weights_file
    torch.save({"state_dict": {}, "obj": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_weights_file(str(tmp_path / "evil.pt"))
    (tmp_path / "trunc.pt").write_bytes(open(tmp_path / "evil.pt", "rb").read()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_weights_file(str(tmp_path / "trunc.pt"))


# ------------------------------------------------------------------------------------------------------------
def test_segmentor_any_size_direct(b0_city):
    _, model = b0_city
    for h, w in [(97, 131), (225, 231), (100, 150)]:
        with torch.no_grad():
            out = model(torch.randn(1, 3, h, w), mode="tensor")
        assert out.shape == (1, 19, -(-h // 8), -(-w // 8))


def test_inference_api_full_size_masks(b0_city, tmp_path):
    from mmengine.runner import save_checkpoint
    from mmseg.apis import inference_model, init_model
    cfg, model = b0_city
    ckpt = tmp_path / "b0.pth"
    save_checkpoint({"state_dict": model.state_dict(), "meta": {"dataset_meta": {"classes": list(range(19))}}},
                    str(ckpt))
    cfg = cfg.copy()
    cfg.test_pipeline = [dict(type="LoadImageFromFile"), dict(type="PackSegInputs")]  # native size, no resize
    seg = init_model(cfg, str(ckpt), device="cpu")
    rng = np.random.default_rng(0)
    for h, w in [(97, 131), (513, 513), (1023, 1025)]:
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        res = inference_model(seg, img)
        assert tuple(res.pred_sem_seg.data.shape[-2:]) == (h, w)
        assert tuple(res.seg_logits.data.shape) == (19, h, w)


def test_unknown_variant_and_wrong_channels_errors():
    from mmseg.registry import MODELS
    with pytest.raises(ValueError, match=r"Unknown EfficientViT-MIT variant 'b7'. Valid variants: b0, b1"):
        MODELS.build(dict(type="EfficientViTMIT", arch="b7"))
    m = MODELS.build(dict(type="EfficientViTMIT", arch="b0"))
    with pytest.raises(ValueError, match=r"in_channels=4"):
        m(torch.randn(1, 4, 64, 64))


def test_seghead_channels_and_input_transform_are_checked():
    from mmseg.registry import MODELS
    head = dict(type="EfficientViTMITSegHead", in_channels=[128, 64, 32], in_index=[2, 1, 0], head_width=32,
                head_depth=1, expand_ratio=4, middle_op="mbconv", final_expand=4, num_classes=19)
    ok = MODELS.build(dict(head, channels=128, input_transform="multiple_select"))  # consistent values are fine
    assert ok.channels == 128 and ok.conv_seg.in_channels == 128
    with pytest.raises(ValueError, match=r"channels=64 cannot be used.*head_width\*final_expand=128"):
        MODELS.build(dict(head, channels=64))
    with pytest.raises(ValueError, match=r"input_transform='resize_concat' cannot be used"):
        MODELS.build(dict(head, input_transform="resize_concat"))
