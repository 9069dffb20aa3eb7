#!/usr/bin/env python
"""Generate a small synthetic dataset in a real dataset layout (used by `make demo`, `make demo-det`, configs/demo/).

    python tools/generate_demo_data.py [--dataset {cityscapes,ade20k,coco,lvis}] [--out DIR] [--num-train N]
                                       [--num-val N] [--seed S] [--height H] [--width W] [--force]

  cityscapes (default): leftImg8bit/{train,val}/<city>/*_leftImg8bit.png + gtFine/{train,val}/<city>/
      *_gtFine_labelTrainIds.png (+ *_gtFine_labelIds.png) -- what mmseg's CityscapesDataset reads;
      data/cityscapes_demo, 100 + 20 street scenes of 128x256.
  ade20k: ADEChallengeData2016/images/{training,validation}/*.jpg + annotations/{training,validation}/*.png
      (0 = other, 1..150) -- what mmseg's ADE20KDataset reads; data/ade_demo (data_root =
      data/ade_demo/ADEChallengeData2016), 100 + 20 scenes of about 128x160.
  coco: annotations/instances_{train,val}2017.json + {train,val}2017/*.jpg -- mmdet's CocoDataset / CocoMetric;
      data/coco_demo, 40 + 12 images of 128x128 with circles / squares / triangles (boxes + polygon masks).
  lvis: annotations/lvis_v1_{train,val}.json + {train,val}2017/*.jpg -- mmdet's LVISV1Dataset / LVISMetric
      (1203 categories, three used, frequencies f / c / r); data/lvis_v1_demo, 40 + 12 images.

Deterministic for a given seed; does nothing when the folder already holds a complete set generated with the same
options (--force redoes it). A folder that looks like a real dataset (no marker of ours) is never written into.
"""
import argparse
import importlib.util
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# effvit_plugins/datasets: in the repository (tools/ beside effvit_plugins/), or run from an installed package's
# effvit_plugins/.mim/tools (ROOT is then effvit_plugins/.mim)
DATASETS_DIR = next((d for d in (os.path.join(ROOT, "effvit_plugins", "datasets"),
                                 os.path.join(os.path.dirname(ROOT), "datasets")) if os.path.isdir(d)), None)

# name -> generator module (file under effvit_plugins/datasets), function, defaults, extra keyword arguments
# taken from the command line. Add a dataset by adding an entry.
DATASETS = {
    "cityscapes": dict(module="cityscapes_demo", function="generate_cityscapes_demo", out="data/cityscapes_demo",
                       num_train=100, num_val=20, height=128, width=256,
                       extra=lambda args: dict(label_ids=not args.no_label_ids),
                       hint="configs/demo/ already uses it for the default --out"),
    "ade20k": dict(module="ade20k_demo", function="generate_ade20k_demo", out="data/ade_demo",
                   num_train=100, num_val=20, height=128, width=160,
                   hint="ADE20K configs: --cfg-options {train,val,test}_dataloader.dataset.data_root=<it>"),
    "coco": dict(module="coco_demo", function="generate_coco_demo", out="data/coco_demo",
                 num_train=40, num_val=12, height=128, width=128,
                 hint="configs/demo/*coco-demo* already use it for the default --out"),
    "lvis": dict(module="coco_demo", function="generate_lvis_demo", out="data/lvis_v1_demo",
                 num_train=40, num_val=12, height=128, width=128,
                 hint="an LVIS config reads it with --cfg-options *.data_root=<out>/ and the evaluator's "
                      "ann_file=<out>/annotations/lvis_v1_val.json"),
}


def _load_generator(module: str):
    """``effvit_plugins.datasets.<module>`` without importing the `effvit_plugins` package (which would pull in
    torch and OpenMMLab, seconds, for nothing): the datasets package (numpy + Pillow) is loaded under a private
    name so that its relative imports resolve."""
    name = "_effvit_demo_datasets"
    if name not in sys.modules:
        if DATASETS_DIR is None:
            sys.exit(f"error: effvit_plugins/datasets not found beside {os.path.dirname(os.path.abspath(__file__))}: "
                     "run this tool from the repository's tools/ or an installed package's effvit_plugins/.mim/tools")
        path = DATASETS_DIR
        spec = importlib.util.spec_from_file_location(name, os.path.join(path, "__init__.py"),
                                                      submodule_search_locations=[path])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.{module}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Generate a small synthetic dataset in a real dataset layout")
    p.add_argument("--dataset", default="cityscapes", choices=sorted(DATASETS),
                   help="which layout to write (default: cityscapes)")
    p.add_argument("--out", help="output folder (default: data/<dataset>_demo, see above)")
    p.add_argument("--num-train", type=int, help="number of training images")
    p.add_argument("--num-val", type=int, help="number of validation images")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--height", type=int, help="image height")
    p.add_argument("--width", type=int, help="image width")
    p.add_argument("--no-label-ids", action="store_true",
                   help="cityscapes: do not write the *_gtFine_labelIds.png maps")
    p.add_argument("--force", action="store_true", help="regenerate even if a complete dataset is present")
    args = p.parse_args(argv)
    spec = DATASETS[args.dataset]
    for key in ("out", "num_train", "num_val", "height", "width"):
        if getattr(args, key) is None:
            setattr(args, key, spec[key])
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.num_train < 1 or args.num_val < 1:
        sys.exit("error: --num-train and --num-val must be >= 1")
    spec = DATASETS[args.dataset]
    if args.no_label_ids and args.dataset != "cityscapes":
        sys.exit("error: --no-label-ids only applies to --dataset cityscapes")
    generate = getattr(_load_generator(spec["module"]), spec["function"])
    t0 = time.time()
    try:
        summary = generate(args.out, num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                           height=args.height, width=args.width, force=args.force,
                           **(spec["extra"](args) if "extra" in spec else {}))
    except (FileExistsError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if summary["generated"]:
        print(f"Done in {time.time() - t0:.1f}s. Use it with data_root='{summary.get('data_root', args.out).rstrip('/')}/' ({spec['hint']}).")


if __name__ == "__main__":
    main()
