#!/usr/bin/env python
"""Export a config's model to ONNX, checked against PyTorch with onnxruntime.

    python tools/deploy/export_onnx.py CONFIG [CHECKPOINT] --shape H W [--dynamic] [--features [--out-indices I ...]]
                                       [--with-postprocess] [--out FILE] [--opset 20] [--check-shape H W]
                                       [--no-check] [--cfg-options k=v ...]

What is exported (input: one preprocessed image batch ``input`` of shape (N, 3, H, W), float32, RGB normalised
with the config's mean/std, printed at the end):

* ImageNet configs (``configs/*/*_in1k.py``): ``logits`` (N, 1000).
* EfficientViT SegHead configs: ``logits`` (N, classes, H, W), i.e. resized to the input size (bilinear).
* ``--features`` (any config): the backbone's feature maps ``stride<s>`` -- every map the backbone has, or
  ``--out-indices`` -- or, for a config with a neck, the neck's outputs ``neck<i>``.
* mmdet detectors (RetinaNet, Mask R-CNN), and mmseg segmentors with ``--with-postprocess``: the whole model with
  its post-processing at the fixed padded size H x W (box decoding, score threshold, per-class NMS, max_per_img,
  the mask head on the kept boxes; for segmentors the logits resized to the original image and the arg-max).
  Inputs: ``input``, ``img_shape``, ``scale_factor`` (detectors) / ``ori_shape`` (segmentors). Outputs:
  ``boxes`` (n, 4), ``scores`` (n,), ``labels`` (n,), ``masks`` (n, 28, 28) (Mask R-CNN) / ``labels`` (1, h, w).
  The pre-processing, class names and output format are written into the file's metadata, and
  ``effvit_plugins.deploy.OnnxDetector(path)(bgr_image)`` / ``OnnxSegmentor`` run it (see docs/deployment.md).
  The check runs onnxruntime + the numpy pre/post-processing against mmdet's / mmseg's own inference on a
  generated image (same detections: boxes within 0.01 px, scores within 1e-4, same labels, in each mask at
  most 1% of its pixels or 2 pixels differ; segmentation labels within 0.1% of the pixels).

BatchNorm is folded into the convolutions, the opset is 20 (``--opset 17`` for older runtimes), everything runs in
float32. ``--dynamic`` makes batch, height and width dynamic; it is accepted only for models whose graph is valid at
any size (EfficientViT (MIT) classifiers, backbones and segmentors), which the check proves at a second size. The other families are
exported for a fixed H x W (their graphs hold window partitions / attention-bias tables for that size).

The check runs onnxruntime (CPU) and PyTorch on the same random input: the largest difference must be within
1e-4 of the output's largest magnitude, at ``--shape`` and (dynamic) at a second size. The file is written only
when the check passes (``--no-check`` skips it). Default output: ``work_dirs/onnx/<config name>[_features].onnx``.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(description="Export a config's model to ONNX (checked with onnxruntime)")
    p.add_argument("config", help="config file")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="weights (a tools/train.py checkpoint or a file made by tools/convert_checkpoint.py); "
                        "without it the model's initial weights are exported")
    p.add_argument("--shape", type=int, nargs=2, required=True, metavar=("H", "W"), help="input height and width")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch / height / width (EfficientViT-MIT)")
    p.add_argument("--features", action="store_true", help="export the backbone (+ neck) feature maps")
    p.add_argument("--out-indices", type=int, nargs="+", default=None,
                   help="with --features: which backbone maps (default: all)")
    p.add_argument("--with-postprocess", action="store_true",
                   help="detectors (implied) and segmentors: export with post-processing (boxes / masks / labels)")
    p.add_argument("--out", default=None, help="output .onnx file")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 20; 17 for runtimes without opset 20: GELU then is element-wise nodes)")
    p.add_argument("--check-shape", type=int, nargs=2, action="append", default=None, metavar=("H", "W"),
                   help="sizes to check at instead of the defaults (repeatable)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config settings (key=value)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from effvit_plugins.mm.tools_common import fail, load_config
    from effvit_plugins.deploy import OPSET, ExportError, export_onnx

    if args.out_indices is not None and not args.features:
        fail("--out-indices selects feature maps: use it together with --features")
    if min(args.shape) < 1:
        fail(f"--shape must be positive, got {args.shape}")
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        fail(f"checkpoint file not found: {args.checkpoint}")
    if not os.path.isfile(args.config):
        fail(f"config file not found: {args.config}")
    import torch

    from effvit_plugins.mm.deploy import build_export_model, preprocessing

    cfg = load_config(args.config, args.cfg_options)
    name = os.path.splitext(os.path.basename(args.config))[0] + ("_features" if args.features else "")
    out = args.out or os.path.join("work_dirs", "onnx", name + ".onnx")
    scope = str(cfg.get("default_scope", ""))
    if not args.features and (args.with_postprocess or scope == "mmdet"):
        if args.dynamic:
            fail("a model with its post-processing is exported at a fixed size (--shape): drop --dynamic")
        if args.opset is not None and args.opset < 16:
            fail(f"--opset {args.opset}: the post-processing needs opset 16 or later (RoiAlign with half-pixel "
                 f"coordinates, as mmdet's aligned RoIAlign); use --opset 16 or more")
        return export_with_postprocess(args, cfg, name, out)
    try:
        model, names, kind = build_export_model(cfg, args.checkpoint, args.features, args.out_indices)
    except ValueError as e:
        fail(str(e))
    except RuntimeError as e:  # strict checkpoint loading
        fail(checkpoint_mismatch(args, e))
    what = f"{name} ({'features' if args.features else kind})"
    print(f"{what}: outputs {', '.join(names)}; input (N, 3, {args.shape[0]}, {args.shape[1]})", flush=True)
    try:
        report = export_onnx(model, out, tuple(args.shape), dynamic=args.dynamic, output_names=names,
                             opset=args.opset or OPSET, check=not args.no_check,
                             check_shapes=[tuple(s) for s in args.check_shape] if args.check_shape else None,
                             what=what, progress=lambda s: print("  " + s, flush=True))
    except ExportError as e:
        fail(f"{e} Nothing was written to {out}.", code=1)
    for (h, w), errs in report.checks:
        print(f"  onnxruntime vs PyTorch at {h}x{w}: max relative error "
              + ", ".join(f"{n} {e:.2e}" for n, e in zip(names, errs)))
    pre = preprocessing(cfg)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB, opset {report.opset}, "
          f"{'dynamic batch/height/width' if report.dynamic else f'fixed {args.shape[0]}x{args.shape[1]}'}, "
          f"{report.folded_bn} BatchNorms folded)")
    if pre["mean"]:
        print(f"input preprocessing: {'BGR->RGB, ' if pre['to_rgb'] else ''}(x - mean) / std with mean "
              f"{pre['mean']} std {pre['std']} (0-255 pixel scale)")
    del torch
    return report


def checkpoint_mismatch(args, error: Exception) -> str:
    """The message for a ``--checkpoint`` that strict loading refused."""
    return (f"{args.checkpoint} does not fit {args.config}: {str(error).splitlines()[0][:300]} ... An official "
            f"release file must be converted first: python tools/convert_checkpoint.py SRC DST")


def export_with_postprocess(args, cfg, name, out):
    from effvit_plugins.mm.tools_common import fail
    from effvit_plugins.deploy import OPSET, ExportError, export_onnx
    from effvit_plugins.deploy.runtime import METADATA_KEY, describe_outputs
    from effvit_plugins.mm.deploy import build_deploy_export, fitting_image_size
    import json

    try:
        dep = build_deploy_export(cfg, args.checkpoint, tuple(args.shape), name)
        # images resized by the test pipeline must fit the export size: fail before exporting if they cannot
        fitting_image_size(dep.metadata["pipeline"], dep.metadata["input_size"])
    except ValueError as e:
        fail(str(e))
    except RuntimeError as e:  # strict checkpoint loading
        fail(checkpoint_mismatch(args, e))
    what = f"{name} ({dep.kind} with post-processing)"
    print(f"{what}: inputs {', '.join(dep.input_names)}; outputs {', '.join(dep.output_names)}; fixed "
          f"{args.shape[0]}x{args.shape[1]}", flush=True)
    try:
        report = export_onnx(dep.module, out, tuple(args.shape), output_names=dep.output_names,
                             opset=args.opset or OPSET, check=not args.no_check, what=what,
                             progress=lambda s: print("  " + s, flush=True), inputs=dep.inputs,
                             input_names=dep.input_names, checker=dep.checker,
                             metadata={METADATA_KEY: json.dumps(dep.metadata)})
    except ExportError as e:
        fail(f"{e} Nothing was written to {out}.", code=1)
    for (h, w), errs in report.checks:
        print(f"  onnxruntime vs {'mmdet' if dep.kind == 'detector' else 'mmseg'} inference at {h}x{w}: "
              + ", ".join(f"{n} {e:.3g}" for n, e in zip(report.check_names, errs)))
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB, opset {report.opset}, fixed "
          f"{args.shape[0]}x{args.shape[1]}, {report.folded_bn} BatchNorms folded)")
    for line in describe_outputs(dep.metadata):
        print(line)
    return report


if __name__ == "__main__":
    main()
