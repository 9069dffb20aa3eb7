"""tools/deploy/export_onnx.py: every family's smallest classifier, the B0/B1 segmentors and multi-scale features
export with BatchNorm folded and run in onnxruntime like PyTorch (dynamic models at two sizes); what cannot be
exported fails clearly and writes nothing."""
import os
import sys

import onnx
import onnxruntime
import pytest
import torch
import torch.nn as nn

from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config
from effvit_plugins.models.spec import families
from effvit_plugins.deploy import ExportError, export_onnx, fold_batchnorm, max_relative_error, unfolded_batchnorms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
from configgen.cls import config_path  # noqa: E402

# config -> (export shape, dynamic): each family's smallest classifier; the first family's also as a dynamic graph
SMALLEST = {config_path(s, s.variants[0])[len("configs/"):]: ((224, 224), i == 0)
            for i, s in enumerate(f for f in families() if f.cls_head is not None)}
SEGMENTORS = ["efficientvit_mit/efficientvit-seghead_efficientvit-b0_8xb2-160k_cityscapes-1024x2048.py",
              "efficientvit_mit/efficientvit-seghead_efficientvit-b1_8xb2-160k_ade20k-512x512.py"]


def _checkpoint(repo_root, rel, tmp_path, bn_randomizer):
    """A runner-style checkpoint of the config's model with non-trivial BN statistics (so folding matters)."""
    model = build_model_from_cfg(load_config(os.path.join(repo_root, "configs", rel)))
    bn_randomizer(model)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return model, str(path)


def _ort(path, x):
    sess = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.numpy()})


def _run_tool(load_tool, repo_root, rel, ckpt, out, shape, *extra):
    argv = [os.path.join(repo_root, "configs", rel)] + ([ckpt] if ckpt else []) + [
        "--shape", str(shape[0]), str(shape[1]), "--out", str(out), *extra]
    return load_tool("deploy/export_onnx").main(argv)


@pytest.mark.parametrize("rel", sorted(SMALLEST), ids=lambda r: os.path.basename(r).split("_")[0])
def test_smallest_classifier_exports_and_matches(rel, tmp_path, repo_root, load_tool, bn_randomizer):
    shape, dynamic = SMALLEST[rel]
    model, ckpt = _checkpoint(repo_root, rel, tmp_path, bn_randomizer)
    out = tmp_path / "model.onnx"
    report = _run_tool(load_tool, repo_root, rel, ckpt, out, shape, *(["--dynamic"] if dynamic else []))
    assert out.is_file() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    assert len(report.checks) == (2 if dynamic else 1) and report.max_rel_error < 1e-4, report.checks
    assert (report.folded_bn > 0 or "edgevit" in rel) and unfolded_batchnorms(str(out)) == []  # EdgeViT: BN precedes its convs
    if "mit" in rel:  # every BN of EfficientViT-MIT follows a conv (others have BNs after additions / pooling)
        assert "BatchNormalization" not in report.op_counts
    graph = onnx.load(str(out))
    assert graph.opset_import[0].version == 20
    # independent check with the checkpoint's weights, at a size the tool did not use for dynamic models
    size = (200, 264) if dynamic else shape
    x = torch.randn(2 if dynamic else 1, 3, *size)
    with torch.inference_mode():
        ref = model(x, mode="tensor")
    assert max_relative_error(_ort(str(out), x)[0], ref.numpy()) < 1e-4


@pytest.mark.parametrize("rel", SEGMENTORS, ids=lambda r: os.path.basename(r).split("_")[1])
def test_segmentor_exports_logits_at_input_size(rel, tmp_path, repo_root, load_tool, bn_randomizer):
    model, ckpt = _checkpoint(repo_root, rel, tmp_path, bn_randomizer)
    out = tmp_path / "seg.onnx"
    report = _run_tool(load_tool, repo_root, rel, ckpt, out, (128, 256), "--dynamic")
    assert [s for s, _ in report.checks] == [(128, 256), (101, 197)] and report.max_rel_error < 1e-4
    x = torch.randn(1, 3, 96, 160)
    (logits,) = _ort(str(out), x)
    assert logits.shape == (1, model.decode_head.num_classes, 96, 160)
    with torch.inference_mode():
        ref = nn.functional.interpolate(model(x, mode="tensor"), size=(96, 160), mode="bilinear",
                                        align_corners=False)
    assert max_relative_error(logits, ref.numpy()) < 1e-4


def _resize_modes(path):
    return sorted(next((a.s.decode() for a in n.attribute if a.name == "mode"), "nearest")
                  for n in onnx.load(path).graph.node if n.op_type == "Resize")


def test_fixed_size_segmentor_upsamples_by_convolution(tmp_path, repo_root, load_tool, bn_randomizer):
    """A fixed-size export writes the SegHead's x2 / x4 bicubic upsampling as convolution + DepthToSpace (no cubic
    Resize: onnxruntime runs that on one thread), keeps the final logits Resize on plain NCHW (a Reshape before it),
    and still equals PyTorch; at a size that is not a multiple of 32 the factors are not integers and Resize stays."""
    rel = SEGMENTORS[0]
    model, ckpt = _checkpoint(repo_root, rel, tmp_path, bn_randomizer)
    for shape, d2s, modes in [((128, 256), 2, ["linear"]), ((100, 150), 0, ["cubic", "cubic", "linear"])]:
        out = tmp_path / f"seg_{shape[0]}.onnx"
        report = _run_tool(load_tool, repo_root, rel, ckpt, out, shape)
        assert not report.dynamic and report.max_rel_error < 1e-4
        assert report.op_counts.get("DepthToSpace", 0) == d2s and _resize_modes(str(out)) == modes
        x = torch.randn(1, 3, *shape)
        with torch.inference_mode():
            ref = nn.functional.interpolate(model(x, mode="tensor"), size=shape, mode="bilinear",
                                            align_corners=False)
        assert max_relative_error(_ort(str(out), x)[0], ref.numpy()) < 1e-4
    final = [n for n in onnx.load(str(tmp_path / "seg_128.onnx")).graph.node if n.op_type in ("Reshape", "Resize")]
    assert [n.op_type for n in final[-3:]] == ["Reshape", "Reshape", "Resize"]


def test_features_of_a_classifier_config_are_every_backbone_map(tmp_path, repo_root, load_tool):
    rel = "efficientvit_mit/efficientvit-mit-b0_8xb256_in1k.py"
    out = tmp_path / "feat.onnx"
    report = _run_tool(load_tool, repo_root, rel, None, out, (160, 160), "--features", "--dynamic")
    assert report.output_names == ["stride2", "stride4", "stride8", "stride16", "stride32"]
    outs = _ort(str(out), torch.randn(1, 3, 100, 70))
    assert [o.shape for o in outs] == [(1, c, -(-100 // s), -(-70 // s))
                                       for c, s in zip((8, 16, 32, 64, 128), (2, 4, 8, 16, 32))]
    report = _run_tool(load_tool, repo_root, rel, None, tmp_path / "f2.onnx", (64, 64), "--features",
                       "--out-indices", "2", "4")
    assert report.output_names == ["stride8", "stride32"] and not report.dynamic


@pytest.mark.parametrize("rel", sorted(r for r, (_, dynamic) in SMALLEST.items() if not dynamic),
                         ids=lambda r: os.path.basename(r).split("_")[0])
def test_features_of_the_smallest_fixed_size_backbones(rel, tmp_path, repo_root, load_tool, bn_randomizer):
    """Every backbone map of each fixed-size family's smallest variant, BN folded, equals PyTorch in onnxruntime
    (MIT's dynamic features are tested above)."""
    model, ckpt = _checkpoint(repo_root, rel, tmp_path, bn_randomizer)
    out = tmp_path / "feat.onnx"
    report = _run_tool(load_tool, repo_root, rel, ckpt, out, (160, 192), "--features")
    n_maps = model.backbone.num_stages
    assert report.output_names == [f"stride{s}" for s in model.backbone.stage_strides]
    assert len(report.checks) == 1 and report.max_rel_error < 1e-4 and unfolded_batchnorms(str(out)) == []
    x = torch.randn(1, 3, 160, 192)
    with torch.inference_mode():
        ref = model.backbone.forward_intermediates(x, intermediates_only=True)
    outs = _ort(str(out), x)
    assert len(outs) == len(ref) == n_maps
    assert all(max_relative_error(o, r.numpy()) < 1e-4 for o, r in zip(outs, ref))


def test_features_with_a_neck_export_the_neck_outputs(tmp_path):
    from mmengine.config import Config

    from effvit_plugins.mm.deploy import build_export_model

    cfg = Config(dict(default_scope="mmseg", model=dict(
        type="EncoderDecoder",
        backbone=dict(type="EfficientViTMSRA", arch="m0"),
        neck=dict(type="EfficientViTMSRAFPN", in_channels=[64, 128, 192], out_channels=32, num_outs=5,
                  num_extra_trans_convs=2),
        decode_head=dict(type="FCNHead", in_channels=32, channels=16, num_convs=1, num_classes=3,
                         norm_cfg=dict(type="BN")))))
    model, names, _ = build_export_model(cfg, features=True)
    assert names == [f"neck{i}" for i in range(5)]
    report = export_onnx(model, str(tmp_path / "neck.onnx"), (128, 128), output_names=names)
    assert report.max_rel_error < 1e-4 and len(report.checks[0][1]) == 5
    with pytest.raises(ValueError, match="has a neck"):
        build_export_model(cfg, features=True, out_indices=(0,))


def test_dynamic_export_of_a_fixed_size_model_fails_and_writes_nothing(tmp_path, repo_root, load_tool, capsys):
    out = tmp_path / "m0.onnx"
    with pytest.raises(SystemExit) as e:
        _run_tool(load_tool, repo_root, "efficientvit_msra/efficientvit-msra-m0_8xb256_in1k.py", None, out,
                  (224, 224), "--dynamic")
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "cannot be exported with dynamic height/width" in err and "without --dynamic" in err
    assert os.listdir(tmp_path) == []


def test_unsupported_operator_is_named_and_nothing_is_written(tmp_path):
    class Histogram(nn.Module):
        def forward(self, x):
            return torch.histc(x, bins=8)

    path = tmp_path / "h.onnx"
    with pytest.raises(ExportError, match=r"aten::histc has no ONNX translation in opset 20"):
        export_onnx(Histogram(), str(path), (8, 8), what="histogram")
    assert os.listdir(tmp_path) == []


def test_wrong_checkpoint_and_bad_arguments_are_clear_errors(tmp_path, repo_root, load_tool, capsys):
    rel = "efficientvit_mit/efficientvit-mit-b0_8xb256_in1k.py"
    torch.save({"state_dict": {"backbone.nothing": torch.zeros(1)}}, tmp_path / "bad.pth")
    for extra, msg in (([str(tmp_path / "bad.pth")], "does not fit"), ([str(tmp_path / "missing.pth")], "not found"),
                       (["--out-indices", "1"], "together with --features")):
        with pytest.raises(SystemExit):
            load_tool("deploy/export_onnx").main([os.path.join(repo_root, "configs", rel), *extra, "--shape", "64",
                                                  "64", "--out", str(tmp_path / "x.onnx")])
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_fold_batchnorm_folds_every_conv_bn_pair_exactly(bn_randomizer):
    from effvit_plugins.models.efficientformer_v2 import EfficientFormerV2Backbone

    model = EfficientFormerV2Backbone("s0").eval()
    bn_randomizer(model)
    folded, n = fold_batchnorm(model)
    left = [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    # the only BNs left are not preceded by a convolution (none in this backbone)
    assert n == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) and left == []
    x = torch.randn(1, 3, 96, 96)
    with torch.enable_grad():  # the unfused path of the original, the plain convs of the copy
        ref, out = model(x), folded(x)
    for a, b in zip(out, ref):
        assert max_relative_error(a.detach().numpy(), b.detach().numpy()) < 1e-5
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
