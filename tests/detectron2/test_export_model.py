"""Detectron2's own ``tools/deploy/export_model.py`` (its source tree's, commit 02b5c4e, UNMODIFIED) on our yaml configs
through the launcher (``python -m effvit_plugins.detectron2.run``), checked against the eager model:

* one Mask R-CNN per family (smallest variant): ``--export-method tracing --format torchscript``, ``tracing`` /
  ``onnx`` (Detectron2's opset 11, run by onnxruntime) and ``--export-method scripting``; the exported model's
  boxes, scores, classes and masks equal the eager model's on a generated 64x96 image (tolerances below);
* one RetinaNet (EfficientViT-MSRA, whose upsampling FPN is ours) traced to ONNX;
* an export that fails leaves no file (Detectron2 opens ``model.onnx`` before exporting into it);
* every family's Detectron2 backbone compiles with ``torch.jit.script`` and matches eager.

The weights are random and deterministic, with the box classifier scaled so that the detectors detect things on
the image (:func:`effvit_plugins.testing.detectron2_detector_with_detections`); smaller heads than the configs'
(FC_DIM, CONV_DIM, FPN channels: command-line overrides) keep the files small. All exports run in ONE interpreter
(:func:`effvit_plugins.testing.run_detectron2_tools`, which calls the launcher's ``main`` per export).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from effvit_plugins.models.spec import families
from effvit_plugins.testing import (detectron2_detector_with_detections, detectron2_sample_input,
                                    detectron2_tools_dir, randomize_model)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTS = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
        "MODEL.ROI_MASK_HEAD.CONV_DIM", "64", "MODEL.FPN.OUT_CHANNELS", "64", "TEST.DETECTIONS_PER_IMAGE", "20"]
METHODS = [("tracing", "torchscript"), ("tracing", "onnx"), ("scripting", "torchscript")]
# Largest differences allowed between the exported and the eager detections (measured: see docs/deployment.md,
# "Detectron2: export_model.py"): box corners in pixels, scores, mask probabilities. Classes and the number of
# detections must be equal.
TOL = {"boxes": 1e-3, "scores": 1e-5, "masks": 1e-5}
MIN_DETECTIONS = 5
FAILING_TOOL = '''
import os, sys
import torch
from detectron2.utils.file_io import PathManager


class Broken(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("this export fails on purpose")


# what export_model.py does: open the output, then export into it
with PathManager.open(os.path.join(sys.argv[1], "model.onnx"), "wb") as f:
    torch.onnx.export(Broken(), (torch.zeros(1),), f)
'''


def config(kind, spec):
    folder = {"mask_rcnn": "COCO-InstanceSegmentation", "retinanet": "COCO-Detection"}[kind]
    neck = "upfpn" if spec.upsample_neck else "fpn"
    return os.path.join(ROOT, "configs", "detectron2", folder,
                        f"{kind}_{spec.d2_token}_{spec.variants[0]}_{neck}_1x.yaml")


def load_cfg(path):
    from detectron2.config import get_cfg

    from effvit_plugins.detectron2 import add_effvit_config

    cfg = add_effvit_config(get_cfg())
    cfg.merge_from_file(path)
    cfg.merge_from_list(OPTS)
    return cfg


def flat_eager(model, image):
    """What export_model.py's traced model returns: TracingAdapter's flattened outputs."""
    from detectron2.export import TracingAdapter
    from detectron2.modeling import GeneralizedRCNN

    def rcnn(model, inputs):
        return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]

    adapter = TracingAdapter(model, [{"image": image}], rcnn if isinstance(model, GeneralizedRCNN) else None)
    with torch.no_grad():
        return [t.clone() for t in adapter(image)]


CASES = {}  # name -> (config path, family key)
for _spec in families():
    CASES[_spec.key] = (config("mask_rcnn", _spec), _spec.key)
RETINANET = "retinanet_efficientvit_msra"
CASES[RETINANET] = (config("retinanet", families()[[s.key for s in families()].index("efficientvit_msra")]),
                    "efficientvit_msra")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Eager outputs of every case and the exports of export_model.py (one subprocess for all of them)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("d2export")
    image_path = str(root / "image.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(image_path)
    tool = os.path.join(detectron2_tools_dir(), "deploy", "export_model.py")
    cases, calls, keys = {}, [], []
    for name, (cfg_path, _) in CASES.items():
        cfg = load_cfg(cfg_path)
        image = detectron2_sample_input(cfg, image_path)
        # (seed 1 for the RetinaNet: with seed 0 two of its 20 scores are 1.3e-5 apart, too close to compare orders)
        model = detectron2_detector_with_detections(cfg, image, seed=1 if name == RETINANET else 0)
        weights = str(root / f"{name}.pth")
        torch.save({"model": model.state_dict()}, weights)
        with torch.no_grad():
            fields = model.inference([{"image": image}], do_postprocess=False)[0].get_fields() \
                if name != RETINANET else None
        cases[name] = dict(model=model, image=image, flat=flat_eager(model, image), fields=fields)
        methods = METHODS if name != RETINANET else [("tracing", "onnx")]
        for method, fmt in methods:
            out = str(root / name / f"{method}_{fmt}")
            calls.append([tool, "--config-file", cfg_path, "--export-method", method, "--format", fmt,
                          "--output", out, "--sample-image", image_path, *OPTS, "MODEL.WEIGHTS", weights])
            keys.append((name, method, fmt))
            cases[name][(method, fmt)] = out
    failing = root / "failing_tool.py"
    failing.write_text(FAILING_TOOL)
    os.makedirs(root / "failed")
    calls.append([str(failing), str(root / "failed")])
    keys.append(("failing", None, None))
    (root / "calls.json").write_text(json.dumps(calls))
    code = ("import json, sys\nfrom effvit_plugins.testing import run_detectron2_tools\n"
            "print('RESULTS=' + json.dumps(run_detectron2_tools(json.load(open(sys.argv[1])))))")
    r = subprocess.run([sys.executable, "-c", code, str(root / "calls.json")], cwd=ROOT, capture_output=True,
                       text=True, timeout=900, env={**os.environ, "PYTHONPATH": ROOT})
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULTS=")]
    assert r.returncode == 0 and lines, (r.stdout + r.stderr)[-6000:]
    errors = dict(zip(keys, json.loads(lines[-1][len("RESULTS="):])))
    return dict(root=root, cases=cases, errors=errors)


def output_dir(exported, name, method, fmt):
    error = exported["errors"][(name, method, fmt)]
    assert error is None, f"export_model.py --export-method {method} --format {fmt} failed for {name}:\n{error}"
    out = exported["cases"][name][(method, fmt)]
    leftovers = [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert not leftovers, leftovers
    return out


def check_detections(name, what, eager, got, keys):
    """``eager`` / ``got``: {boxes, classes, scores[, masks]} tensors of the same detections in the same order."""
    n = len(eager["scores"])
    assert n >= MIN_DETECTIONS, f"{name}: the eager model detects {n} objects; the comparison needs some"
    gaps = eager["scores"][:-1] - eager["scores"][1:]
    # the detections are sorted by score: scores closer than twice the tolerance could swap places in the export
    assert float(gaps.min()) > 2 * TOL["scores"], f"{name}: eager scores too close to compare an ordering"
    assert len(got["scores"]) == n, f"{name} {what}: {len(got['scores'])} detections, eager {n}"
    assert torch.equal(got["classes"].long(), eager["classes"].long()), f"{name} {what}: classes differ"
    diffs = {k: float((got[k].float() - eager[k].float()).abs().max()) for k in keys if k != "classes"}
    print(f"{name} {what}: max |exported - eager| " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    for k, v in diffs.items():
        assert v <= TOL[k], f"{name} {what}: {k} differ by {v:.3g} (> {TOL[k]})"


def as_detections(flat, with_masks=True):
    """TracingAdapter's flattened instances (fields sorted by name) as a dict."""
    if with_masks:  # pred_boxes, pred_classes, pred_masks, scores, image size
        boxes, classes, masks, scores = flat[:4]
        return dict(boxes=boxes, classes=classes, masks=masks, scores=scores)
    boxes, classes, scores = flat[:3]  # RetinaNet: pred_boxes, pred_classes, scores
    return dict(boxes=boxes, classes=classes, scores=scores)


def onnx_detections(out, image):
    import onnx
    import onnxruntime as ort

    path = os.path.join(out, "model.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert {(d.domain or "ai.onnx", d.version) for d in model.opset_import} == {("ai.onnx", 11)}, \
        model.opset_import  # Detectron2's STABLE_ONNX_OPSET_VERSION, standard operators only
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return [torch.from_numpy(a) for a in session.run(None, {session.get_inputs()[0].name: image.numpy()})]


def traced_outputs(out, fmt, image):
    """The flat outputs of the traced export in ``out`` (``model.ts`` or ``model.onnx``) on ``image``."""
    if fmt == "onnx":
        return onnx_detections(out, image)
    ts = torch.jit.load(os.path.join(out, "model.ts"))
    with torch.no_grad():
        return list(ts(image))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("name", [s.key for s in families()])
def test_tracing(exported, name, fmt):
    case = exported["cases"][name]
    got = traced_outputs(output_dir(exported, name, "tracing", fmt), fmt, case["image"])
    check_detections(name, f"tracing/{fmt}", as_detections(case["flat"]), as_detections(got),
                     ("boxes", "classes", "scores", "masks"))


@pytest.mark.parametrize("name", [s.key for s in families()])
def test_scripting_torchscript(exported, name):
    case = exported["cases"][name]
    out = output_dir(exported, name, "scripting", "torchscript")
    ts = torch.jit.load(os.path.join(out, "model.ts"))
    with torch.no_grad():
        fields = ts(({"image": case["image"]},))[0]
    eager = case["fields"]

    def dets(f):
        boxes = f["pred_boxes"]
        return dict(boxes=boxes if torch.is_tensor(boxes) else boxes.tensor, classes=f["pred_classes"],
                    scores=f["scores"], masks=f["pred_masks"])

    check_detections(name, "scripting/torchscript", dets(eager), dets(fields), ("boxes", "classes", "scores", "masks"))


def test_retinanet_tracing_onnx(exported):
    case = exported["cases"][RETINANET]
    got = onnx_detections(output_dir(exported, RETINANET, "tracing", "onnx"), case["image"])
    check_detections(RETINANET, "tracing/onnx", as_detections(case["flat"], False), as_detections(got, False),
                     ("boxes", "classes", "scores"))


def test_failed_export_leaves_no_file(exported):
    error = exported["errors"][("failing", None, None)]
    assert error is not None and "this export fails on purpose" in error, error
    assert os.listdir(exported["root"] / "failed") == []  # neither a 0-byte model.onnx nor a temporary file


def test_atomic_writer(tmp_path):
    """What the launcher's PathManager.open(path, "w"/"wb") returns: the file appears, with the usual permissions,
    only when the write completes; an error inside the with block leaves the previous file (or none)."""
    from effvit_plugins.detectron2.export import AtomicWriter

    path = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError):
        with AtomicWriter(path, "wb") as f:
            f.write(b"partial")
            raise RuntimeError("export failed")
    assert os.listdir(tmp_path) == []
    with AtomicWriter(path, "wb") as f:
        f.write(b"model")
    assert path.read_bytes() == b"model" and os.listdir(tmp_path) == ["model.onnx"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(ValueError):
        with AtomicWriter(path, "w") as f:
            f.write("other")
            raise ValueError
    assert path.read_bytes() == b"model"
    f = AtomicWriter(path, "w")
    f.write("closed without a with block")
    f.close()
    assert path.read_text() == "closed without a with block" and os.listdir(tmp_path) == ["model.onnx"]


def test_roi_align_aligned_at_opset_11():
    """Detectron2's poolers (RoIAlign, aligned=True) exported at opset 11 with the launcher's translation and run by
    onnxruntime equal torchvision's kernel, boxes smaller than a feature pixel, of zero and negative size included
    (torchvision's own opset-11 translation exports the unaligned operator: 3.6 here)."""
    import io

    import onnxruntime as ort
    import torchvision
    from torchvision.ops import _register_onnx_ops as tv_onnx

    from effvit_plugins.detectron2.export import register_roi_align_aligned

    class Pool(torch.nn.Module):
        def __init__(self, size, ratio):
            super().__init__()
            self.size, self.ratio = size, ratio

        def forward(self, x, rois):
            return torchvision.ops.roi_align(x, rois, self.size, 0.25, self.ratio, True)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 20, 30, generator=g)
    n = 200
    xy = torch.rand(n, 2, generator=g) * torch.tensor([130.0, 90.0]) - 5
    wh = torch.rand(n, 2, generator=g) ** 3 * torch.tensor([100.0, 60.0])
    wh[:20] = torch.rand(20, 2, generator=g) * 3  # under one feature pixel (stride 4)
    wh[20:25, 0], wh[25:28, 1] = 0.0, -1.0
    rois = torch.cat([torch.randint(0, 2, (n, 1), generator=g).float(), xy, xy + wh], 1)
    register_roi_align_aligned()
    try:
        for size, ratio in [((7, 7), 0), ((14, 14), 0), ((3, 5), 2)]:
            model, f = Pool(size, ratio), io.BytesIO()
            torch.onnx.export(model, (x, rois), f, opset_version=11, dynamo=False, input_names=["x", "rois"],
                              dynamic_axes={"rois": {0: "n"}})
            session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
            for r in (rois, rois[:1], rois[:0]):
                got = torch.from_numpy(session.run(None, {"x": x.numpy(), "rois": r.numpy()})[0])
                ref = model(x, r)
                assert got.shape == ref.shape
                if len(r):
                    assert float((got - ref).abs().max()) < 2e-5, (size, ratio, float((got - ref).abs().max()))
    finally:  # torchvision's translation again (other tests of this process)
        torch.onnx.unregister_custom_op_symbolic("torchvision::roi_align", 11)
        torch.onnx.register_custom_op_symbolic("torchvision::roi_align", tv_onnx.roi_align_opset11, 11)


@pytest.mark.parametrize("spec", families(), ids=lambda s: s.key)
def test_backbone_scripts(spec):
    """The Detectron2 backbone (core + wrapper) compiles with torch.jit.script and returns the eager maps (eager
    inference folds BatchNorms into the convolutions: rounding only), at two sizes, one not a multiple of 32."""
    from effvit_plugins.detectron2.backbone import backbone_class

    model = randomize_model(backbone_class(spec.key)(spec.variants[0])).eval()
    scripted = torch.jit.script(model)
    for shape in [(1, 3, 64, 96), (2, 3, 75, 83)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref, got = model(x), scripted(x)
        assert list(got) == list(ref)
        for k in ref:
            err = float((got[k] - ref[k]).abs().max() / ref[k].abs().max())
            assert err < 1e-5, f"{spec.key} {k} {shape}: scripted vs eager relative difference {err:.3g}"
