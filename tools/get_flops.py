#!/usr/bin/env python
"""Params and MACs of a config's model, without any dataset.

    python tools/get_flops.py CONFIG [--shape H W] [--cfg-options k=v ...] [--device meta|cpu]

MACs are counted with torch.utils.flop_counter (FLOPs of conv/matmul/linear divided by 2), the counter the
official EfficientViT figures were reproduced with; the forward runs on the meta device by default, so
large models at 1024x2048 take seconds. For segmentors this is the network output at stride 8 (before the
final resize to the image size), as in the official tables. For detectors (mmdet configs) the default input is
800x1333 (padded to 800x1344 as the data preprocessor pads) and params / MACs are those of backbone + neck (the
feature pyramid; the heads' cost depends on the number of proposals), with the whole detector's parameter count
beside them. No dataset is read (mmdet's own get_flops needs one).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args():
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(description="Count params and MACs of a model config")
    p.add_argument("config", help="config file path")
    p.add_argument("--shape", type=int, nargs="+", default=None,
                   help="input size: H W (or one value for square). Default: 1024 2048 for mmseg, 800 1333 for "
                        "mmdet, 224 224 otherwise")
    p.add_argument("--device", default="meta", choices=["meta", "cpu"], help="where to run the counting forward")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config settings (key=value)")
    return p.parse_args()


def detector_complexity(cfg, shape, device: str = "meta") -> dict:
    """Params / MACs of a detector's backbone + neck for an ``shape`` (H, W) image, padded to the data
    preprocessor's ``pad_size_divisor`` as at test time (800x1333 -> 800x1344). The detector is built on the meta
    device by default: no memory, no initialisation, any size in seconds."""
    import torch

    from effvit_plugins.mm.tools_common import build_model_from_cfg
    from effvit_plugins.utils.complexity import count_macs, count_params

    div = int((cfg.model.get("data_preprocessor") or {}).get("pad_size_divisor", 1) or 1)
    padded = tuple(-(-int(s) // div) * div for s in shape)
    if device == "meta":
        with torch.device("meta"):
            model = build_model_from_cfg(cfg, device="meta")
    else:
        model = build_model_from_cfg(cfg, device)
    params = count_params(model.backbone) + (count_params(model.neck) if model.with_neck else 0)
    macs = count_macs(model, (1, 3) + padded, device=device, forward=lambda m, x: m.extract_feat(x))
    return dict(shape=tuple(shape), padded=padded, params=params, macs=macs, total_params=count_params(model))


def main():
    args = parse_args()
    from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config, model_complexity

    cfg = load_config(args.config, args.cfg_options)
    scope = cfg.get("default_scope", "mmseg")
    if args.shape is None:
        shape = {"mmseg": (1024, 2048), "mmdet": (800, 1333)}.get(scope, (224, 224))
    elif len(args.shape) == 1:
        shape = (args.shape[0], args.shape[0])
    elif len(args.shape) == 2:
        shape = tuple(args.shape)
    else:
        sys.exit("error: --shape takes H W (or a single value for a square input)")
    split = "=" * 40
    if scope == "mmdet":
        r = detector_complexity(cfg, shape, args.device)
        pad = f" ({shape[0]}x{shape[1]} padded to a multiple of the data preprocessor's pad_size_divisor)" \
            if r["padded"] != tuple(shape) else ""
        print(f"{split}\nConfig: {args.config}\nInput shape: (1, 3, {r['padded'][0]}, {r['padded'][1]}){pad}\n"
              f"Params (backbone + neck): {r['params'] / 1e6:.3f} M ({r['params']})\n"
              f"MACs (backbone + neck): {r['macs'] / 1e9:.3f} G ({r['macs']})\n"
              f"Params (whole detector): {r['total_params'] / 1e6:.3f} M ({r['total_params']})\n{split}")
        return
    model = build_model_from_cfg(cfg)
    params, macs = model_complexity(model, shape, device=args.device)
    print(f"{split}\nConfig: {args.config}\nInput shape: (1, 3, {shape[0]}, {shape[1]})\n"
          f"Params: {params / 1e6:.3f} M ({params})\nMACs: {macs / 1e9:.3f} G ({macs})\n{split}")


if __name__ == "__main__":
    main()
