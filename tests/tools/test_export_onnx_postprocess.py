"""tools/deploy/export_onnx.py with post-processing: each family's smallest Mask R-CNN, one RetinaNet and one
Semantic FPN segmentor export to ONNX with NMS / mask head / arg-max in the graph, and onnxruntime with the numpy
runtime (effvit_plugins.deploy.OnnxDetector / OnnxSegmentor) reproduces mmdet's ``inference_detector`` and mmseg's
``inference_model`` on generated images. Small fixed size (128x160, the test resize set to it), random weights with
heads biased so that there are many detections; the box head's hidden width reduced (export speed only)."""
import json
import os
import sys

import numpy as np
import onnx
import pytest
import torch

from effvit_plugins.deploy import OnnxDetector, OnnxSegmentor
from effvit_plugins.deploy.runtime import METADATA_KEY, Detections, compare_detections, generated_image
from effvit_plugins.mm.deploy import DETECTION_TOLERANCE, detection_cutoffs
from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config
from effvit_plugins.models.spec import families

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
from configgen.mmdet import KINDS, config_path  # noqa: E402

SIZE = (128, 160)
MASK_RCNN = {s.key: config_path(s, s.variants[0], KINDS[1], "coco") for s in families()}
RETINANET_OF = {s.key: config_path(s, s.variants[0], KINDS[0], "coco") for s in families()}
RETINANET = RETINANET_OF["edgevit"]  # EdgeViT XXS: the error-message tests
SEM_FPN_OF = {"edgevit": "configs/edgevit/fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py",
              "efficientformer_v1": "configs/efficientformer/fpn_efficientformer-l1_8xb4-40k_ade20k-512x512.py",
              "efficientformer_v2": "configs/efficientformer/fpn_efficientformerv2-s0_8xb4-40k_ade20k-512x512.py",
              "efficientvit_msra": "configs/efficientvit_msra/fpn_efficientvit-msra-m0_8xb4-40k_ade20k-512x512.py"}
# the test resize fits 128x160 (step 1 of the pipelines is the Resize); images of 96x120 resize to exactly that
DET_OPTIONS = {"test_dataloader.dataset.pipeline.1.scale": (SIZE[1], SIZE[0]),
               "model.roi_head.bbox_head.fc_out_channels": 128}
SEG_OPTIONS = {"test_dataloader.dataset.pipeline.1.scale": (640, SIZE[0]),
               "test_pipeline.1.scale": (640, SIZE[0])}
IMAGES = [(96, 120), (100, 141), (60, 90)]  # resized to 128x160, 114x160, 107x160 (padded to 128x160)


def _options(rel, options):
    return {k: v for k, v in options.items() if "roi_head" not in k or "mask-rcnn" in rel}


def _biased_checkpoint(cfg, path):
    """Random weights (seeded) made to detect (:func:`effvit_plugins.testing.detector_with_detections`)."""
    from mmdet.apis import inference_detector

    from effvit_plugins.testing import detector_with_detections

    torch.manual_seed(0)
    model = build_model_from_cfg(cfg)
    model.cfg = cfg
    if hasattr(model, "roi_head") or hasattr(model, "bbox_head"):
        image = generated_image(*IMAGES[0], seed=0)
        detector_with_detections(model, lambda: inference_detector(model, image))
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return model


def _export(load_tool, repo_root, rel, options, tmp_path, *extra):
    cfg = load_config(os.path.join(repo_root, rel), options)
    model = _biased_checkpoint(cfg, tmp_path / "w.pth")
    out = tmp_path / "model.onnx"
    argv = [os.path.join(repo_root, rel), str(tmp_path / "w.pth"), "--shape", str(SIZE[0]), str(SIZE[1]),
            "--out", str(out), *extra, "--cfg-options", *[f"{k}={v}".replace(" ", "") for k, v in options.items()]]
    report = load_tool("deploy/export_onnx").main(argv)
    assert out.is_file() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    model.cfg = cfg
    return model.eval(), str(out), report


def _compare_with_inference_detector(model, path, figures):
    from mmdet.apis import inference_detector

    det = OnnxDetector(path)
    total = 0
    for i, (h, w) in enumerate(IMAGES):
        image = generated_image(h, w, seed=i)
        ours = det(image)
        with torch.no_grad():
            res = inference_detector(model, image).pred_instances
        ref = Detections(res.bboxes.numpy(), res.scores.numpy(), res.labels.numpy(),
                         res.masks.numpy() if "masks" in res else None)
        diff = compare_detections(ours, ref, tie=DETECTION_TOLERANCE["score_atol"], **detection_cutoffs(model))
        figures.append(f"onnxruntime vs inference_detector, {h}x{w} image: {diff}")  # docs/deployment.md's
        assert diff.within(**DETECTION_TOLERANCE), (IMAGES[i], str(diff))
        assert ours.boxes.dtype == np.float32 and ours.labels.dtype == np.int64
        if ours.masks is not None:
            assert ours.masks.shape == (len(ours), h, w) and ours.masks.dtype == bool and ours.masks.any()
        total += len(ours)
    return total


@pytest.mark.parametrize("family", sorted(MASK_RCNN))
def test_mask_rcnn_exports_with_postprocessing_and_matches_inference_detector(family, tmp_path, repo_root,
                                                                              load_tool, capsys):
    rel = MASK_RCNN[family]
    model, path, report = _export(load_tool, repo_root, rel, _options(rel, DET_OPTIONS), tmp_path)
    assert report.output_names == ["boxes", "scores", "labels", "masks"]
    assert report.check_names[0] == "detections" and report.checks[0][1][0] > 0
    ops = report.op_counts
    assert ops.get("NonMaxSuppression", 0) == 2 and ops.get("RoiAlign", 0) == 8  # RPN + R-CNN; 4 levels x 2
    figures = []
    assert _compare_with_inference_detector(model, path, figures) > 0
    meta = json.loads({p.key: p.value for p in onnx.load(path).metadata_props}[METADATA_KEY])
    assert meta["task"] == "instance_segmentation" and len(meta["classes"]) == 80 and meta["input_size"] == [*SIZE]
    out = capsys.readouterr().out
    assert "graph outputs: boxes (n, 4)" in out and "masks (n, 28, 28)" in out and "OnnxDetector" in out
    print("\n".join(f"{family}: {f}" for f in figures))


@pytest.mark.parametrize("family", sorted(RETINANET_OF))
def test_retinanet_exports_with_postprocessing_and_matches_inference_detector(family, tmp_path, repo_root,
                                                                              load_tool):
    rel = RETINANET_OF[family]
    model, path, report = _export(load_tool, repo_root, rel, _options(rel, DET_OPTIONS), tmp_path)
    assert report.output_names == ["boxes", "scores", "labels"] and report.op_counts["NonMaxSuppression"] == 1
    figures = []
    assert _compare_with_inference_detector(model, path, figures) > 0
    print("\n".join(f"{family} retinanet: {f}" for f in figures))
    assert OnnxDetector(path)(generated_image(60, 90)).masks is None


@pytest.mark.parametrize("family", sorted(SEM_FPN_OF))
def test_sem_fpn_exports_labels_and_matches_inference_model(family, tmp_path, repo_root, load_tool):
    from mmseg.apis import inference_model

    rel = SEM_FPN_OF[family]
    model, path, report = _export(load_tool, repo_root, rel, SEG_OPTIONS, tmp_path, "--with-postprocess")
    assert report.output_names == ["labels"] and report.checks[0][1][0] <= 1e-3
    seg = OnnxSegmentor(path)
    for i, (h, w) in enumerate([(96, 120), (112, 120)]):  # -> 128x160; 128x137, to a multiple of 32: 128x160
        image = generated_image(h, w, seed=i)
        ours = seg(image)
        with torch.no_grad():
            ref = inference_model(model, image).pred_sem_seg.data[0].numpy()
        assert ours.shape == ref.shape == (h, w)
        assert (ours != ref).mean() <= 1e-3 and len(np.unique(ref)) > 1
    with pytest.raises(ValueError, match="OnnxSegmentor"):
        OnnxDetector(path)


def test_image_larger_than_the_export_and_unsupported_detector_are_clear_errors(tmp_path, repo_root, load_tool,
                                                                                capsys):
    rel = RETINANET
    out = tmp_path / "r.onnx"
    with pytest.raises(SystemExit):  # the config's own 1333x800 resize does not fit 128x160
        load_tool("deploy/export_onnx").main([os.path.join(repo_root, rel), "--shape", "128", "160", "--out",
                                              str(out)])
    assert "export with --shape" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit):  # a NMS type the graph does not implement
        load_tool("deploy/export_onnx").main([os.path.join(repo_root, rel), "--shape", "128", "160", "--out",
                                              str(out), "--cfg-options", "model.test_cfg.nms.type=soft_nms"])
    assert "only 'nms'" in capsys.readouterr().err and os.listdir(tmp_path) == []


def test_several_inputs_checker_and_metadata_and_a_failed_check_writes_nothing(tmp_path):
    from effvit_plugins.deploy import ExportError, export_onnx, read_metadata

    class Shift(torch.nn.Module):
        def forward(self, x, offset):
            return torch.nn.functional.conv2d(x, torch.ones(2, 3, 1, 1)) + offset

    inputs = (torch.randn(1, 3, 8, 8), torch.tensor([0.5]))
    seen = []

    def checker(path):
        seen.append(read_metadata(path))
        return ["max"], [((8, 8), [0.0])]

    report = export_onnx(Shift(), str(tmp_path / "ok.onnx"), (8, 8), inputs=inputs, input_names=["x", "offset"],
                         output_names=["y"], checker=checker, metadata={"k": "v"})
    assert seen == [{"k": "v"}] and read_metadata(str(tmp_path / "ok.onnx")) == {"k": "v"}
    assert report.check_names == ["max"] and report.checks == [((8, 8), [0.0])]

    def failing(path):
        raise ExportError("detections differ")

    with pytest.raises(ExportError, match="detections differ"):
        export_onnx(Shift(), str(tmp_path / "bad.onnx"), (8, 8), inputs=inputs, input_names=["x", "offset"],
                    checker=failing)
    assert sorted(os.listdir(tmp_path)) == ["ok.onnx"]
    with pytest.raises(ValueError, match="needs a checker"):
        export_onnx(Shift(), str(tmp_path / "bad.onnx"), (8, 8), inputs=inputs)


def test_no_detection_above_the_threshold_gives_empty_outputs(tmp_path, repo_root, load_tool):
    """The graph honours the exported score_thr; with none above it every output (also the mask head's) is empty."""
    rel = MASK_RCNN["efficientvit_mit"]
    options = dict(_options(rel, DET_OPTIONS), **{"model.test_cfg.rcnn.score_thr": 1.0})
    model, path, report = _export(load_tool, repo_root, rel, options, tmp_path)
    assert report.checks[0][1][0] == 0
    out = OnnxDetector(path)(generated_image(100, 141))
    assert len(out) == 0 and out.boxes.shape == (0, 4) and out.masks.shape == (0, 100, 141)
