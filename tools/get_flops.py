#!/usr/bin/env python
"""Params and MACs of a config's model, without any dataset.

    python tools/get_flops.py CONFIG [--shape H W] [--cfg-options k=v ...] [--device meta|cpu]

MACs are counted with torch.utils.flop_counter (FLOPs of conv/matmul/linear divided by 2), the counter the
official EfficientViT figures were reproduced with; the forward runs on the meta device by default, so
large models at 1024x2048 take seconds. For segmentors this is the network output at stride 8 (before the
final resize to the image size), as in the official tables.
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
                   help="input size: H W (or one value for square). Default: 1024 2048 for mmseg, 224 224 otherwise")
    p.add_argument("--device", default="meta", choices=["meta", "cpu"], help="where to run the counting forward")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config settings (key=value)")
    return p.parse_args()


def main():
    args = parse_args()
    from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config, model_complexity

    cfg = load_config(args.config, args.cfg_options)
    scope = cfg.get("default_scope", "mmseg")
    if args.shape is None:
        shape = (1024, 2048) if scope == "mmseg" else (224, 224)
    elif len(args.shape) == 1:
        shape = (args.shape[0], args.shape[0])
    elif len(args.shape) == 2:
        shape = tuple(args.shape)
    else:
        sys.exit("error: --shape takes H W (or a single value for a square input)")
    model = build_model_from_cfg(cfg)
    params, macs = model_complexity(model, shape, device=args.device)
    split = "=" * 40
    print(f"{split}\nConfig: {args.config}\nInput shape: (1, 3, {shape[0]}, {shape[1]})\n"
          f"Params: {params / 1e6:.3f} M ({params})\nMACs: {macs / 1e9:.3f} G ({macs})\n{split}")


if __name__ == "__main__":
    main()
