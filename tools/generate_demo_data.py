#!/usr/bin/env python
"""Generate a small synthetic dataset in a real dataset's folder layout (used by `make demo`, configs/demo/, tests).

    python tools/generate_demo_data.py [--dataset cityscapes|ade20k] [--out DIR] [--num-train N] [--num-val N]
                                       [--seed S] [--height H] [--width W] [--force]

  cityscapes (default): leftImg8bit/{train,val}/<city>/*_leftImg8bit.png + gtFine/{train,val}/<city>/
      *_gtFine_labelTrainIds.png (+ *_gtFine_labelIds.png), what mmseg's CityscapesDataset reads;
      default --out data/cityscapes_demo (= data_root).
  ade20k: ADEChallengeData2016/images/{training,validation}/*.jpg + annotations/{training,validation}/*.png
      (0 = other, 1..150), what mmseg's ADE20KDataset reads; default --out data/ade_demo
      (data_root = data/ade_demo/ADEChallengeData2016).

Deterministic for a given seed; does nothing when the folder already holds a complete set generated with the
same options (--force redoes it). Options left out take the dataset's defaults.
"""
import argparse
import importlib.util
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --dataset name -> generator function in effvit_plugins.datasets, default --out, what it writes
GENERATORS = {
    "cityscapes": dict(func="generate_cityscapes_demo", out="data/cityscapes_demo",
                       note="configs/demo/ already uses it for the default --out"),
    "ade20k": dict(func="generate_ade20k_demo", out="data/ade_demo",
                   note="ADE20K configs: --cfg-options {train,val,test}_dataloader.dataset.data_root=<it>"),
}


def _load_datasets():
    """``effvit_plugins.datasets`` alone (numpy + Pillow), loaded under a private name: importing the
    `effvit_plugins` package would pull in torch and OpenMMLab (seconds) for nothing."""
    path = os.path.join(ROOT, "effvit_plugins", "datasets")
    name = "_effvit_demo_datasets"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the package's relative imports resolve through it
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Generate a small synthetic dataset in a real dataset's layout")
    p.add_argument("--dataset", choices=sorted(GENERATORS), default="cityscapes",
                   help="which layout (default: cityscapes)")
    p.add_argument("--out", help="output folder (default: " + ", ".join(
        f"{k}: {v['out']}" for k, v in GENERATORS.items()) + ")")
    p.add_argument("--num-train", type=int, help="number of training images (default: 100)")
    p.add_argument("--num-val", type=int, help="number of validation images (default: 20)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--height", type=int, help="image height (default: cityscapes 128, ade20k about 128)")
    p.add_argument("--width", type=int, help="image width (default: cityscapes 256, ade20k about 160)")
    p.add_argument("--no-label-ids", action="store_true",
                   help="cityscapes: do not write the *_gtFine_labelIds.png maps")
    p.add_argument("--force", action="store_true", help="regenerate even if a complete dataset is present")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if (args.num_train is not None and args.num_train < 1) or (args.num_val is not None and args.num_val < 1):
        sys.exit("error: --num-train and --num-val must be >= 1")
    gen = GENERATORS[args.dataset]
    kwargs = {k: v for k, v in dict(num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                                    height=args.height, width=args.width).items() if v is not None}
    if args.no_label_ids:
        if args.dataset != "cityscapes":
            sys.exit("error: --no-label-ids only applies to --dataset cityscapes")
        kwargs["label_ids"] = False
    out = args.out or gen["out"]
    t0 = time.time()
    try:
        summary = getattr(_load_datasets(), gen["func"])(out, force=args.force, **kwargs)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if summary["generated"]:
        print(f"Done in {time.time() - t0:.1f}s. Use it with data_root='{summary['data_root'].rstrip('/')}/' "
              f"({gen['note']}).")


if __name__ == "__main__":
    main()
