#!/usr/bin/env python
"""Generate the synthetic Cityscapes-layout demo dataset (used by `make demo` and configs/demo/).

    python tools/generate_demo_data.py [--out data/cityscapes_demo] [--num-train 100] [--num-val 20] [--seed 0]

Writes leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png
(+ *_gtFine_labelIds.png), exactly what mmseg's CityscapesDataset reads. Deterministic for a given seed;
does nothing when the folder already holds a complete set generated with the same options (--force redoes it).
"""
import argparse
import importlib.util
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_generator():
    """The generator module alone (numpy + Pillow): importing the `effvit_plugins` package would pull in
    torch and OpenMMLab (seconds) for nothing."""
    path = os.path.join(ROOT, "effvit_plugins", "datasets", "cityscapes_demo.py")
    spec = importlib.util.spec_from_file_location("_effvit_cityscapes_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Generate a small synthetic dataset in the Cityscapes layout")
    p.add_argument("--out", default="data/cityscapes_demo", help="output folder (default: data/cityscapes_demo)")
    p.add_argument("--num-train", type=int, default=100, help="number of training images (default: 100)")
    p.add_argument("--num-val", type=int, default=20, help="number of validation images (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--height", type=int, default=128, help="image height (default: 128)")
    p.add_argument("--width", type=int, default=256, help="image width (default: 256)")
    p.add_argument("--no-label-ids", action="store_true", help="do not write the *_gtFine_labelIds.png maps")
    p.add_argument("--force", action="store_true", help="regenerate even if a complete dataset is present")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.num_train < 1 or args.num_val < 1:
        sys.exit("error: --num-train and --num-val must be >= 1")
    t0 = time.time()
    try:
        summary = _load_generator().generate_cityscapes_demo(args.out, num_train=args.num_train, num_val=args.num_val,
                                           seed=args.seed, height=args.height, width=args.width,
                                           force=args.force, label_ids=not args.no_label_ids)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if summary["generated"]:
        print(f"Done in {time.time() - t0:.1f}s. Use it with data_root='{args.out.rstrip('/')}/' "
              f"(configs/demo/ already does for the default --out).")


if __name__ == "__main__":
    main()
