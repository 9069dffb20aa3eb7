#!/usr/bin/env python
"""Latency of our models against reference implementations, measured in the same process.

    python tools/benchmark.py [--suite seg backbones families det d2 onnx deploy train] [--repeat 10] [--threads N]
                              [--device cpu|cuda]
                              [--dtype float32|bfloat16|float16]

Suites:
  seg        our EfficientViT-B1 segmentor (backbone + SegHead) vs mmseg's SegFormer-B1 (mit-b1 + SegformerHead),
             19 classes, one 1024x2048 image, network output (``mode='tensor'``).  Target: >= 6x faster.
  backbones  our EfficientViT (MIT) backbones vs timm's ``efficientvit_*`` ``forward_features`` at 224.
             Target: ratio >= 1 (no slower).
  families   one variant per family at 224 and 512x512 vs timm (EdgeViT has no timm model: latency and
             MACs per second are reported).
  det        Mask R-CNN with our EfficientFormer-L1, EfficientViT-B1, EfficientViT-MSRA-M4 and EdgeViT-XS backbones
             (our COCO configs) vs mmdet's Mask R-CNN R-50-FPN, one 800x1333 image: whole-model inference
             (``predict``: RPN, 1000 proposals, box head, and the mask head on 100 detections -- the score
             threshold is set to 0 so random weights still produce detections) and backbone alone.
             Target: every backbone >= 2x faster than ResNet-50.
  onnx       deployment: each family's smallest and largest backbone (and MSRA-M4) at 224x224 and 512x512 -- our
             PyTorch eager, our onnxruntime export (BN folded, opset 20, fixed size) and timm's same variant
             (``features_only``) timed in the same interleaved rounds -- and the EfficientViT-B1 SegHead segmentor
             (Cityscapes config, logits at the input size) at 1024x2048, eager vs onnxruntime.  Targets: every
             backbone no slower than timm in eager mode; onnxruntime >= 1.3x faster than eager for the segmentor.
  deploy     the whole exported detector: Mask R-CNN of one variant per family (our COCO configs) exported with its
             post-processing (tools/deploy/export_onnx.py at 800x1344) and run by onnxruntime with the numpy
             mask pasting (effvit_plugins.deploy.OnnxDetector), against eager PyTorch (mmdet ``predict`` with
             rescaling and mask pasting) on the same preprocessed 800x1333 image, timed interleaved.  Random weights
             with the box classifier biased so that 100 detections pass the config's score threshold (the mask head
             runs on them, as for a trained model); the export's check against mmdet runs first.
  d2         Detectron2: Mask R-CNN with our EfficientFormer-L1 and EfficientViT-B1 backbones (configs/detectron2/
             COCO-InstanceSegmentation) vs Detectron2's own R-50-FPN Mask R-CNN (its model zoo's
             mask_rcnn_R_50_FPN_1x), one 800x1333 image: whole model (inference on 1000 proposals -- RPN NMS
             threshold 1 -- and score threshold 0 so the mask head runs on 100 detections, as trained models do)
             and backbone alone (the bottom-up network under the FPN).
             Target: both backbones >= 2x faster than ResNet-50.
  train      training: one optimiser step (forward, loss, backward, the config's AdamW step) of the mmseg/mmdet
             models -- EfficientViT-B1 + SegHead (Cityscapes config) at 512x1024 batch 2 and one Mask R-CNN per
             family (our COCO configs) at 512x512 batch 2, through ``model.train_step`` as mmengine's loop calls
             it -- and of each family's backbone (sum of its feature maps' means, AdamW) against timm's same
             variant where timm has it.  Columns: step time eager and with ``torch.compile`` (inductor, what a
             config's ``compile=True`` does to ``train_step``), timed interleaved, median; and the peak memory one
             step adds (activations, gradients, temporaries) without and with ``with_cp``, measured as the growth
             of peak RSS in a fresh subprocess per model (freed memory returned to the OS there), which also gives
             the B1 segmentor at 1024x2048.  Targets: step >= 1.3x timm's; compile >= 1.3x eager; ``with_cp`` at
             most half the step memory of the B1 segmentor at 1024x2048.  ``--train-size H W --train-batch N``
             override every row's input (quick checks), ``--compile-backend`` the backend.

Each pair is timed alternately (ours, reference, ours, ...) after warm-up; the median of ``--repeat`` runs is
reported together with ``speed-up = reference / ours``. Nothing here is a test: numbers depend on the machine.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Latency benchmark (ours vs reference, same process)")
    p.add_argument("--suite", nargs="+", default=["seg", "backbones", "families", "det", "d2", "onnx", "deploy", "train"],
                   choices=["seg", "backbones", "families", "det", "d2", "onnx", "deploy", "train"])
    p.add_argument("--repeat", type=int, default=10, help="timed runs per model (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--variants", nargs="+", default=None,
                   help="restrict the backbones / onnx / train suites (e.g. b0 l3 m4 seg-b1; train: row names "
                        "containing any of them, case-insensitive, e.g. seghead mask-rcnn backbone)")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 512], help="onnx suite: backbone input sides")
    p.add_argument("--det-size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"),
                   help="deploy suite: image size (the export is padded to multiples of 32)")
    p.add_argument("--train-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="train suite: one input size for every row instead of each row's own")
    p.add_argument("--train-batch", type=int, default=None, help="train suite: one batch size for every row")
    p.add_argument("--compile-backend", default="inductor",
                   help="train suite: torch.compile backend of the compiled column ('none' leaves the column out)")
    p.add_argument("--no-memory", action="store_true", help="train suite: leave the memory columns out")
    p.add_argument("--train-probe", type=int, default=None, help=argparse.SUPPRESS)  # subprocess: memory of row N
    p.add_argument("--probe-what", default="ours", choices=["ours", "with_cp", "timm"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.train_batch is not None and args.train_batch < 1:
        p.error(f"--train-batch must be >= 1, got {args.train_batch}")
    if args.train_size is not None and min(args.train_size) < 32:
        p.error(f"--train-size must be at least 32x32 (every model here has stride 32), got {args.train_size}")
    return args


def time_pair(ours, ref, x, repeat, warmup, device, dtype):
    """Median seconds per forward of ``ours(x)`` and ``ref(x)`` (``ref`` may be None), timed interleaved
    (:func:`effvit_plugins.utils.benchmark.time_interleaved`) in inference mode, under autocast for a half
    ``dtype``."""
    from effvit_plugins.utils.benchmark import time_interleaved

    amp = dtype != torch.float32
    fns = [lambda: ours(x)] + ([lambda: ref(x)] if ref is not None else [])
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    with torch.inference_mode(), torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=amp):
        t_ours, *t_ref = time_interleaved(fns, repeat, warmup, sync=sync)
    return t_ours, (t_ref[0] if t_ref else None)


def report(name, shape, t_ours, t_ref, ref_name, macs=None):
    line = f"{name:<28} {shape:<12} ours {t_ours * 1e3:9.2f} ms"
    if t_ref is not None:
        line += f" | {ref_name} {t_ref * 1e3:9.2f} ms | speed-up x{t_ref / t_ours:5.2f}"
    if macs is not None:
        line += f" | {macs / 1e9:.3f} GMACs, {macs / t_ours / 1e9:.1f} GMACs/s"
    print(line, flush=True)


# ---------------------------------------------------------------------------------------------------------------
def suite_seg(args, device, dtype):
    import effvit_plugins  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config

    init_default_scope("mmseg")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours = build_model_from_cfg(load_config(os.path.join(root, "configs", "efficientvit_cityscapes.py")), device)
    segformer = MODELS.build(dict(
        type="EncoderDecoder",
        backbone=dict(type="MixVisionTransformer", in_channels=3, embed_dims=64, num_stages=4,
                      num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8], patch_sizes=[7, 3, 3, 3],
                      sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True),
        decode_head=dict(type="SegformerHead", in_channels=[64, 128, 320, 512], in_index=[0, 1, 2, 3],
                         channels=256, dropout_ratio=0.1, num_classes=19, norm_cfg=dict(type="BN"),
                         align_corners=False),
        test_cfg=dict(mode="whole"))).to(device).eval()
    x = torch.randn(1, 3, 1024, 2048, device=device)
    t_ours, t_ref = time_pair(lambda t: ours(t, mode="tensor"), lambda t: segformer(t, mode="tensor"), x,
                              args.repeat, args.warmup, device, dtype)
    print("== segmentor, Cityscapes 1024x2048 (network output) ==")
    report("EfficientViT-B1 + SegHead", "1024x2048", t_ours, t_ref, "SegFormer-B1")


def suite_backbones(args, device, dtype):
    import timm

    from effvit_plugins.models.efficientvit_mit import EfficientViTMITBackbone

    print("== EfficientViT (MIT) backbones vs timm forward_features, 224x224, batch 1 ==")
    for v in args.variants or ["b0", "b1", "b2", "b3", "l1", "l2", "l3"]:
        ours = EfficientViTMITBackbone(v, out_indices=(4,)).to(device).eval()
        ref = timm.create_model(f"efficientvit_{v}", pretrained=False).to(device).eval()
        x = torch.randn(1, 3, 224, 224, device=device)
        t_ours, t_ref = time_pair(ours, ref.forward_features, x, args.repeat, args.warmup, device, dtype)
        report(f"efficientvit_{v}", "224x224", t_ours, t_ref, "timm")


def suite_families(args, device, dtype):
    import importlib

    import timm

    from effvit_plugins.utils.complexity import count_macs

    print("== one variant per family vs timm (classifier logits at 224; backbone features at 512x512) ==")
    rows = [  # (our module, classifier class, backbone class, arch, timm name)
        ("efficientvit_mit", "EfficientViTMITClassifier", "EfficientViTMITBackbone", "b1", "efficientvit_b1"),
        ("efficientvit_msra", "EfficientViTMSRAClassifier", "EfficientViTMSRABackbone", "m4", "efficientvit_m4"),
        ("efficientformer_v1", "EfficientFormerV1Classifier", "EfficientFormerV1Backbone", "l1", "efficientformer_l1"),
        ("efficientformer_v2", "EfficientFormerV2Classifier", "EfficientFormerV2Backbone", "s1", "efficientformerv2_s1"),
        ("edgevit", "EdgeViTClassifier", "EdgeViTBackbone", "xxs", None),
    ]
    for mod_name, cls_name, bb_name, arch, timm_name in rows:
        try:
            mod = importlib.import_module(f"effvit_plugins.models.{mod_name}")
            cls, bb = getattr(mod, cls_name), getattr(mod, bb_name)
        except (ImportError, AttributeError) as e:
            print(f"{mod_name}/{arch}: not available ({e})")
            continue
        for size in (224, 512):
            x = torch.randn(1, 3, size, size, device=device)
            if size == 224:
                ours = cls(arch).to(device).eval()
                ref = timm.create_model(timm_name, pretrained=False).to(device).eval() if timm_name else None
                ref_fn = ref
            else:  # dense-prediction use: all stage outputs
                ours = bb(arch).to(device).eval()
                ref = timm_features(timm, timm_name, size).to(device).eval() if timm_name else None
                ref_fn = ref
            macs = count_macs(ours, tuple(x.shape)) if timm_name is None else None
            if ref_fn is not None:
                try:
                    with torch.inference_mode():
                        ref_fn(x)
                except RuntimeError as e:  # e.g. fixed-resolution attention biases
                    print(f"  (timm {timm_name} cannot run at {size}x{size}: {str(e).splitlines()[0][:90]})")
                    ref_fn = None
            t_ours, t_ref = time_pair(ours, ref_fn, x, args.repeat, args.warmup, device, dtype)
            report(f"{mod_name}-{arch}", f"{size}x{size}", t_ours, t_ref, "timm", macs)


DET_CONFIGS = (  # (name, our Mask R-CNN config)
    ("EfficientFormer-L1", "configs/efficientformer/mask-rcnn_efficientformer-l1_fpn_8xb2-1x_coco.py"),
    ("EfficientViT-B1", "configs/efficientvit_mit/mask-rcnn_efficientvit-mit-b1_fpn_8xb2-1x_coco.py"),
    ("EfficientViT-MSRA-M4", "configs/efficientvit_msra/mask-rcnn_efficientvit-msra-m4_upfpn_8xb2-1x_coco.py"),
    ("EdgeViT-XS", "configs/edgevit/mask-rcnn_edgevit-xs_fpn_8xb2-1x_coco.py"),
)


def suite_det(args, device, dtype):
    from mmdet.structures import DetDataSample
    from mmengine.config import Config

    from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h, w = 800, 1333

    def detector(cfg):
        cfg.model.test_cfg.rcnn.score_thr = 0.0  # random weights: keep 100 detections so the mask head runs
        return build_model_from_cfg(cfg, device)

    # mmdet's Mask R-CNN R-50-FPN: the same detector (our base model config) with mmdet's ResNet-50 backbone
    r50_cfg = load_config(os.path.join(root, DET_CONFIGS[0][1]))
    r50_cfg.model.backbone = Config(dict(type="ResNet", depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
                                         frozen_stages=1, norm_cfg=dict(type="BN", requires_grad=True),
                                         norm_eval=True, style="pytorch"))
    r50_cfg.model.neck = Config(dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5))
    ref = detector(r50_cfg)
    x = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8).float().to(device)
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                         batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
    x_pad = torch.nn.functional.pad(x, (0, -w % 32, 0, -h % 32))  # what the data preprocessor's padding gives
    sample.set_metainfo(dict(batch_input_shape=tuple(x_pad.shape[-2:])))

    def whole(model):
        return lambda t: model.predict(t, [sample.clone()], rescale=False)

    print(f"== Mask R-CNN, one {h}x{w} image: ours vs mmdet's R-50-FPN (whole model: predict; backbone alone) ==")
    compare_detectors(args, device, dtype, "", ((name, detector(load_config(os.path.join(root, rel))))
                                                for name, rel in DET_CONFIGS), ref,
                      whole, lambda m: m.backbone, x_pad, x_pad, (h, w))


def compare_detectors(args, device, dtype, tag, detectors, ref, whole, backbone_of, x_whole, x_backbone, hw):
    """Time each of ``detectors`` ((name, model) pairs, built lazily) against ``ref``: the whole model
    (``whole(model)`` called on ``x_whole``), then its backbone alone (``backbone_of(model)`` on ``x_backbone``)."""
    shape = f"{hw[0]}x{hw[1]}"
    for name, ours in detectors:
        t_ours, t_ref = time_pair(whole(ours), whole(ref), x_whole, args.repeat, args.warmup, device, dtype)
        report(f"{tag}Mask R-CNN {name}", shape, t_ours, t_ref, "R-50")
        t_ours, t_ref = time_pair(backbone_of(ours), backbone_of(ref), x_backbone, args.repeat, args.warmup, device,
                                  dtype)
        report(f"  {tag}backbone {name}", shape, t_ours, t_ref, "R-50")


ONNX_BACKBONES = (  # (our core module, backbone class, arch, timm name or None): smallest and largest per family
    ("efficientvit_mit", "EfficientViTMITBackbone", "b0", "efficientvit_b0"),
    ("efficientvit_mit", "EfficientViTMITBackbone", "l3", "efficientvit_l3"),
    ("efficientvit_msra", "EfficientViTMSRABackbone", "m0", "efficientvit_m0"),
    ("efficientvit_msra", "EfficientViTMSRABackbone", "m4", "efficientvit_m4"),
    ("efficientvit_msra", "EfficientViTMSRABackbone", "m5", "efficientvit_m5"),
    ("edgevit", "EdgeViTBackbone", "xxs", None),
    ("edgevit", "EdgeViTBackbone", "s", None),
    ("efficientformer_v1", "EfficientFormerV1Backbone", "l1", "efficientformer_l1"),
    ("efficientformer_v1", "EfficientFormerV1Backbone", "l7", "efficientformer_l7"),
    ("efficientformer_v2", "EfficientFormerV2Backbone", "s0", "efficientformerv2_s0"),
    ("efficientformer_v2", "EfficientFormerV2Backbone", "l", "efficientformerv2_l"),
)
ONNX_SEGMENTOR = "configs/efficientvit_mit/efficientvit-seghead_efficientvit-b1_8xb2-160k_cityscapes-1024x2048.py"


def _deploy_line(name, shape, t_eager, t_ort, err, t_timm=None):
    line = (f"{name:<28} {shape:<10} eager {t_eager * 1e3:9.1f} ms | onnxruntime {t_ort * 1e3:9.1f} ms "
            f"(x{t_eager / t_ort:4.2f}, rel. err {err:.1e})")
    if t_timm is not None:
        line += f" | timm eager {t_timm * 1e3:9.1f} ms (ours x{t_timm / t_eager:4.2f})"
    print(line, flush=True)


def suite_onnx(args, device, dtype):
    import importlib

    import timm

    from effvit_plugins.mm.deploy import build_export_model
    from effvit_plugins.mm.tools_common import load_config
    from effvit_plugins.deploy import ExportError
    from effvit_plugins.utils.benchmark import keep_freed_memory, torch_vs_onnxruntime

    if device != "cpu" or dtype != torch.float32:
        print("== onnx suite: CPU float32 only (onnxruntime CPU provider); skipped ==")
        return
    threads = torch.get_num_threads()
    kept = keep_freed_memory()  # onnxruntime keeps an arena; eager then keeps its freed pages too
    print(f"== deployment: PyTorch eager vs onnxruntime ({threads} threads) and timm eager, batch 1, "
          f"median of {args.repeat} interleaved rounds; freed memory kept in the process: {kept} ==")
    wanted = set(args.variants) if args.variants else None
    for mod_name, cls_name, arch, timm_name in ONNX_BACKBONES:
        if wanted is not None and arch not in wanted:
            continue
        ours = getattr(importlib.import_module(f"effvit_plugins.models.{mod_name}"), cls_name)(arch).eval()
        for size in args.sizes:
            refs = []
            if timm_name:
                ref = timm_features(timm, timm_name, size).eval()
                try:
                    with torch.inference_mode():
                        ref(torch.randn(1, 3, size, size))
                    refs = [ref]
                except RuntimeError as e:  # e.g. fixed-resolution attention biases
                    print(f"  (timm {timm_name} cannot run at {size}x{size}: {str(e).splitlines()[0][:90]})")
            try:
                t_eager, t_ort, err, t_refs = torch_vs_onnxruntime(ours, (size, size), args.repeat, args.warmup,
                                                                   threads, what=f"{mod_name}-{arch}",
                                                                   references=refs)
            except ExportError as e:  # e.g. onnxruntime beyond the 1e-4 tolerance: not timed, said why
                print(f"{mod_name}-{arch:<10} {size}x{size}: not timed: {str(e)[:200]}", flush=True)
                continue
            _deploy_line(f"{mod_name}-{arch}", f"{size}x{size}", t_eager, t_ort, err,
                         t_refs[0] if t_refs else None)
    if wanted is None or "seg-b1" in wanted:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        seg, _, _ = build_export_model(load_config(os.path.join(root, ONNX_SEGMENTOR)))
        t_eager, t_ort, err, _ = torch_vs_onnxruntime(seg, (1024, 2048), args.repeat, args.warmup, threads,
                                                      what="EfficientViT-B1 SegHead")
        _deploy_line("EfficientViT-B1 SegHead", "1024x2048", t_eager, t_ort, err)


DEPLOY_CONFIGS = (  # (name, our Mask R-CNN config): one variant per family
    ("EfficientViT-B1", "configs/efficientvit_mit/mask-rcnn_efficientvit-mit-b1_fpn_8xb2-1x_coco.py"),
    ("EfficientViT-MSRA-M4", "configs/efficientvit_msra/mask-rcnn_efficientvit-msra-m4_upfpn_8xb2-1x_coco.py"),
    ("EdgeViT-XS", "configs/edgevit/mask-rcnn_edgevit-xs_fpn_8xb2-1x_coco.py"),
    ("EfficientFormer-L1", "configs/efficientformer/mask-rcnn_efficientformer-l1_fpn_8xb2-1x_coco.py"),
    ("EfficientFormerV2-S1", "configs/efficientformer/mask-rcnn_efficientformerv2-s1_fpn_8xb2-1x_coco.py"),
)


def suite_deploy(args, device, dtype):
    import tempfile

    from effvit_plugins.deploy import ExportError, export_onnx
    from effvit_plugins.deploy.runtime import METADATA_KEY, OnnxDetector, generated_image, preprocess
    from effvit_plugins.mm.deploy import mmdet_detections, build_deploy_export
    from effvit_plugins.mm.tools_common import load_config
    from effvit_plugins.testing import detector_with_detections
    from effvit_plugins.utils.benchmark import keep_freed_memory, time_interleaved
    import json

    if device != "cpu" or dtype != torch.float32:
        print("== deploy suite: CPU float32 only (onnxruntime CPU provider); skipped ==")
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h, w = args.det_size
    size = (-(-h // 32) * 32, -(-w // 32) * 32)
    threads = torch.get_num_threads()
    kept = keep_freed_memory()
    print(f"== whole Mask R-CNN with post-processing, one {h}x{w} image (graph {size[0]}x{size[1]}): eager PyTorch "
          f"(mmdet predict) vs onnxruntime ({threads} threads) + numpy mask pasting, median of {args.repeat} "
          f"interleaved rounds; freed memory kept: {kept} ==", flush=True)
    for name, rel in DEPLOY_CONFIGS:
        cfg = load_config(os.path.join(root, rel), {"test_dataloader.dataset.pipeline.1.scale": (max(h, w), min(h, w))})
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as d:
            dep = build_deploy_export(cfg, None, size, name)
            model = dep.module.detector
            pre = preprocess(generated_image(h, w), dep.metadata)
            detector_with_detections(model, lambda: mmdet_detections(model, pre))
            path = os.path.join(d, "model.onnx")
            try:
                report = export_onnx(dep.module, path, size, output_names=dep.output_names, inputs=dep.inputs,
                                     input_names=dep.input_names, checker=dep.checker, what=name,
                                     metadata={METADATA_KEY: json.dumps(dep.metadata)})
            except ExportError as e:
                print(f"Mask R-CNN {name:<22}: not timed: {str(e)[:300]}", flush=True)
                continue
            det = OnnxDetector(path, threads)
            fns = [lambda: mmdet_detections(model, pre), lambda: det.postprocess(det.run(pre), pre)]
            with torch.inference_mode():
                t_eager, t_ort = time_interleaved(fns, args.repeat, args.warmup)
            n = len(fns[1]())
            errs = dict(zip(report.check_names, report.checks[0][1]))
            print(f"Mask R-CNN {name:<22} {h}x{w}  eager {t_eager * 1e3:8.1f} ms | onnxruntime {t_ort * 1e3:8.1f} ms "
                  f"(x{t_eager / t_ort:4.2f}) | {n} detections; export check vs mmdet: boxes {errs['box px']:.1e} px, "
                  f"scores {errs['score']:.1e}, masks {errs['mask fraction']:.1e} ({errs['mask pixels']:.0f} px)", flush=True)
            del det


D2_CONFIGS = (  # (name, our Detectron2 Mask R-CNN config)
    ("EfficientFormer-L1", "configs/detectron2/COCO-InstanceSegmentation/mask_rcnn_efficientformer_l1_fpn_1x.yaml"),
    ("EfficientViT-B1", "configs/detectron2/COCO-InstanceSegmentation/mask_rcnn_efficientvit_mit_b1_fpn_1x.yaml"),
)


def suite_d2(args, device, dtype):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from effvit_plugins.detectron2 import add_effvit_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h, w = 800, 1333

    def detector(path):
        cfg = add_effvit_config(get_cfg())
        cfg.merge_from_file(path)
        cfg.MODEL.DEVICE = device
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random weights: keep 100 detections so the mask head runs
        # and keep all POST_NMS_TOPK_TEST (1000) proposals: how many survive the RPN's NMS with random weights
        # depends on the backbone, and the box head's cost with it
        cfg.MODEL.RPN.NMS_THRESH = 1.0
        return build_model(cfg).eval()

    ref = detector(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8).float().to(device)
    x_pad = torch.nn.functional.pad(image, (0, -w % 32, 0, -h % 32))[None]  # what ImageList padding gives

    def whole(model):
        return lambda t: model([{"image": t, "height": h, "width": w}])

    print(f"== Detectron2 Mask R-CNN, one {h}x{w} image: ours vs Detectron2's R-50-FPN (whole model; backbone "
          f"alone) ==")
    compare_detectors(args, device, dtype, "d2 ", ((name, detector(os.path.join(root, rel)))
                                                   for name, rel in D2_CONFIGS), ref,
                      whole, lambda m: m.backbone.bottom_up, image, x_pad, (h, w))


# ---------------------------------------------------------------------------------------------------------------
# train suite
TRAIN_ROWS = (  # (name, kind, what, (H, W), batch, timm name or None, compiled and timed?)
    # kind "mm": ``what`` is our config; kind "backbone": (our core module, backbone class, arch)
    ("EfficientViT-B1 + SegHead", "mm", ONNX_SEGMENTOR, (512, 1024), 2, None, True),
    ("EfficientViT-B1 + SegHead", "mm", ONNX_SEGMENTOR, (1024, 2048), 2, None, False),  # the with_cp goal
    ("Mask R-CNN EfficientViT-B1", "mm", DEPLOY_CONFIGS[0][1], (512, 512), 2, None, True),
    ("Mask R-CNN EfficientViT-MSRA-M4", "mm", DEPLOY_CONFIGS[1][1], (512, 512), 2, None, True),
    ("Mask R-CNN EdgeViT-XS", "mm", DEPLOY_CONFIGS[2][1], (512, 512), 2, None, True),
    ("Mask R-CNN EfficientFormer-L1", "mm", DEPLOY_CONFIGS[3][1], (512, 512), 2, None, True),
    ("backbone EfficientViT-B1", "backbone", ("efficientvit_mit", "EfficientViTMITBackbone", "b1"), (512, 1024), 2,
     "efficientvit_b1", True),
    ("backbone EfficientViT-L1", "backbone", ("efficientvit_mit", "EfficientViTMITBackbone", "l1"), (512, 512), 2,
     "efficientvit_l1", True),
    ("backbone EfficientViT-MSRA-M4", "backbone", ("efficientvit_msra", "EfficientViTMSRABackbone", "m4"), (224, 224),
     16, "efficientvit_m4", True),
    ("backbone EdgeViT-XS", "backbone", ("edgevit", "EdgeViTBackbone", "xs"), (224, 224), 16, None, True),
    ("backbone EfficientFormer-L1", "backbone", ("efficientformer_v1", "EfficientFormerV1Backbone", "l1"), (224, 224),
     16, "efficientformer_l1", True),
    ("backbone EfficientFormerV2-S1", "backbone", ("efficientformer_v2", "EfficientFormerV2Backbone", "s1"),
     (224, 224), 16, "efficientformerv2_s1", True),
)


def _train_row_input(args, row):
    _, _, _, hw, batch, _, _ = row
    return tuple(args.train_size or hw), args.train_batch or batch


def _mm_train_batch(cfg, hw, batch, seed=0):
    """A training batch as the dataloader gives it to ``train_step``: uint8 images and ground truth of random
    content (semantic maps over the config's classes; three boxes with masks per image for detectors)."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    inputs = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for _ in range(batch)]
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1.0, 1.0), flip=False)
    if cfg.get("default_scope") == "mmdet":
        import numpy as np
        from mmdet.structures import DetDataSample
        from mmdet.structures.mask import BitmapMasks
        from mmengine.structures import InstanceData

        samples = []
        for _ in range(batch):
            xy = torch.rand(3, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
            wh = 16 + torch.rand(3, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35])
            boxes = torch.cat([xy, xy + wh], 1).round()
            masks = np.zeros((3, h, w), np.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            sample = DetDataSample(metainfo=meta)
            sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.randint(0, 80, (3,), generator=g),
                                               masks=BitmapMasks(masks, h, w))
            samples.append(sample)
    else:
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample

        classes = cfg.model.decode_head.num_classes
        samples = [SegDataSample(metainfo=meta, gt_sem_seg=PixelData(
            data=torch.randint(0, classes, (1, h, w), generator=g))) for _ in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


def build_train_step(args, row, what="ours"):
    """``(model, step, compiled)``: ``step()`` runs one optimiser step of ``row`` (``what``: ours, ours with ``with_cp``, or
    timm's same variant); ``compiled(backend)`` gives the same step under ``torch.compile`` -- for mmengine models
    ``train_step`` compiled, as mmengine's runner does for a config's ``compile=True``."""
    import importlib

    name, kind, spec, _, _, timm_name, _ = row
    hw, batch = _train_row_input(args, row)
    torch.manual_seed(0)
    if kind == "mm":
        import effvit_plugins  # noqa: F401  (registers our modules, repairs the optimiser's groups for compile)
        from mmengine.optim import build_optim_wrapper

        from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        cfg = load_config(os.path.join(root, spec))
        cfg.model.backbone.with_cp = what == "with_cp"
        if cfg.model.data_preprocessor.get("size") is not None:  # segmentors pad to the crop: pad to this input
            cfg.model.data_preprocessor.size = hw
        model = build_model_from_cfg(cfg, args.device).train()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        data = _mm_train_batch(cfg, hw, batch)

        def compiled(backend):
            train_step = torch.compile(model.train_step, backend=backend)
            return lambda: train_step(data, optim_wrapper)

        return model, (lambda: model.train_step(data, optim_wrapper)), compiled
    if what == "timm":
        import timm

        model = timm_features(timm, timm_name, hw)
    else:
        mod, cls, arch = spec
        model = getattr(importlib.import_module(f"effvit_plugins.models.{mod}"), cls)(arch, with_cp=what == "with_cp")
    model = model.to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    x = torch.randn(batch, 3, *hw, device=args.device)

    def step():
        loss = sum(f.float().mean() for f in model(x))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return model, step, lambda backend: torch.compile(step, backend=backend)


def _rss_kib():
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f)
    return int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def train_memory_probe(args):
    """Subprocess entry (``--train-probe N --probe-what W``): peak-RSS growth, in MiB, of one optimiser step of row
    N after a first step has created the optimiser's state; printed as ``PROBE <MiB>``. The parent starts it with
    glibc's mmap threshold low, so freed activations leave the process and the peak is what the step holds."""
    import ctypes
    import gc

    _, step, _ = build_train_step(args, TRAIN_ROWS[args.train_probe], args.probe_what)
    step()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    before, _ = _rss_kib()
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")
    step()
    _, peak = _rss_kib()
    print(f"PROBE {(peak - before) / 1024:.1f}", flush=True)


def _probe_memory(args, index, what):
    import subprocess

    if not os.path.exists("/proc/self/clear_refs"):
        return None
    cmd = [sys.executable, os.path.abspath(__file__), "--train-probe", str(index), "--probe-what", what,
           "--device", args.device, "--threads", str(torch.get_num_threads())]
    if args.train_size:
        cmd += ["--train-size", *map(str, args.train_size)]
    if args.train_batch:
        cmd += ["--train-batch", str(args.train_batch)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("PROBE ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"memory probe of {TRAIN_ROWS[index][0]} ({what}) failed (exit {out.returncode}):\n"
                           f"{out.stderr[-2000:]}")
    return float(lines[-1].split()[1])


def suite_train(args, device, dtype):
    from effvit_plugins.utils.benchmark import keep_freed_memory, time_interleaved

    if dtype != torch.float32:
        raise SystemExit("--suite train measures float32 training; AMP training is a config's optim_wrapper "
                         "(type='AmpOptimWrapper'), not a --dtype of this benchmark")
    if device != "cpu" and not args.no_memory:
        raise SystemExit("--suite train measures memory as the process's RSS (CPU); on CUDA pass --no-memory")
    wanted = [v.lower() for v in args.variants] if args.variants else None
    rows = [(i, r) for i, r in enumerate(TRAIN_ROWS) if wanted is None or any(v in r[0].lower() for v in wanted)]
    if not rows:
        raise SystemExit(f"--variants {args.variants} match no train row; rows: {sorted({r[0] for r in TRAIN_ROWS})}")
    backend = None if args.compile_backend == "none" else args.compile_backend
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    kept = keep_freed_memory() if device == "cpu" else False
    print(f"== training: one optimiser step (AdamW), median of {args.repeat} interleaved rounds after {args.warmup} "
          f"warm-up; compiled column: torch.compile(backend={backend!r}); memory: peak RSS growth of one step in a "
          f"fresh process; freed memory kept in this process: {kept} ==", flush=True)
    print(f"{'model':<34} {'input':<14} {'eager ms':>9} {'compile ms':>10} {'x eager':>7} {'timm ms':>8} "
          f"{'x timm':>6} {'MiB':>7} {'with_cp':>7} {'ratio':>5} {'timm MiB':>8}", flush=True)
    for index, row in rows:
        name, _, _, _, _, timm_name, timed = row
        hw, batch = _train_row_input(args, row)
        t_eager = t_comp = t_timm = None
        if timed or args.train_size:
            _, step, compiled = build_train_step(args, row)
            # every row compiles the same code (this suite's step, mmengine's train_step): start from dynamo's empty
            # cache, as a training run does, or the next row would be compiled with dynamic shapes
            torch._dynamo.reset()
            fns = [step] + ([compiled(backend)] if backend is not None else [])
            if timm_name:
                timm_step = build_train_step(args, row, "timm")[1]
                try:
                    timm_step()
                    fns.append(timm_step)
                except RuntimeError as e:  # e.g. fixed-resolution attention biases
                    print(f"  (timm {timm_name} cannot train at {hw[0]}x{hw[1]}: {str(e).splitlines()[0][:90]})")
                    timm_name = None
            times = time_interleaved(fns, args.repeat, max(args.warmup, 2 if backend else 0), sync=sync)
            t_eager = times[0]
            t_comp = times[1] if backend is not None else None
            t_timm = times[-1] if timm_name else None
            del step, compiled, fns
        mem = mem_cp = mem_timm = None
        if not args.no_memory:
            mem = _probe_memory(args, index, "ours")
            mem_cp = _probe_memory(args, index, "with_cp")
            mem_timm = _probe_memory(args, index, "timm") if timm_name else None

        def f(v, fmt):
            return "-" if v is None else format(v, fmt)

        print(f"{name:<34} {f'{batch}x{hw[0]}x{hw[1]}':<14} {f(t_eager and t_eager * 1e3, '9.1f'):>9} "
              f"{f(t_comp and t_comp * 1e3, '10.1f'):>10} {f(t_comp and t_eager / t_comp, '7.2f'):>7} "
              f"{f(t_timm and t_timm * 1e3, '8.1f'):>8} {f(t_timm and t_timm / t_eager, '6.2f'):>6} "
              f"{f(mem, '7.0f'):>7} {f(mem_cp, '7.0f'):>7} {f(mem_cp and mem_cp / mem, '5.2f'):>5} "
              f"{f(mem_timm, '8.0f'):>8}", flush=True)


def timm_features(timm, name, size):
    """timm feature extractor; fixed-input-size models (MSRA, EfficientFormer) are built for ``size``."""
    try:
        return timm.create_model(name, pretrained=False, features_only=True, img_size=size)
    except TypeError:
        return timm.create_model(name, pretrained=False, features_only=True)


def main(argv=None):
    args = parse_args(argv)
    if args.train_probe is not None:
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.set_flush_denormal(True)
        return train_memory_probe(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    # random weights drive some activations (deep detectors' especially) to subnormal floats, which make CPU
    # arithmetic many times slower and the timings depend on values: flush them to zero in every suite
    torch.set_flush_denormal(True)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, dtype {args.dtype}, "
          f"median of {args.repeat} runs")
    for s in args.suite:
        globals()[f"suite_{s}"](args, args.device, dtype)


if __name__ == "__main__":
    main()
