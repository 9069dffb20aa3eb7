#!/usr/bin/env python
"""Run one of our Detectron2 configs on images and write the pictures (Detectron2's DefaultPredictor and
Visualizer: boxes and instance masks, or the semantic segmentation overlay).

    python demo/detectron2_demo.py --config-file configs/detectron2/COCO-InstanceSegmentation/<config>.yaml \
        --input IMAGE_OR_FOLDER [...] --output DIR [--confidence-threshold 0.5] [--opts KEY VALUE ...]

``--opts`` overrides config keys as in tools/train_net.py, e.g. ``MODEL.WEIGHTS path/or/url`` (an official weight
file of any of our families, converted on load, a file of tools/convert_checkpoint.py --to detectron2, or a
Detectron2 checkpoint) or ``INPUT.MIN_SIZE_TEST 512 INPUT.MAX_SIZE_TEST 853``. Without MODEL.WEIGHTS the model is
randomly initialised (a smoke test of the pipeline). Class names come from the config's first test dataset
(DATASETS.TEST). Runs on the CPU when there is no GPU.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger("effvit_plugins.detectron2_demo")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="a Detectron2 config of ours (configs/detectron2/**/*.yaml)")
    parser.add_argument("--input", nargs="+", required=True,
                        help="image files, or folders: every image in them (not in subfolders)")
    parser.add_argument("--output", required=True, help="folder for the pictures (one per input image)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="instances: draw those scoring at least this; default: 0.5")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides, KEY VALUE pairs (e.g. MODEL.WEIGHTS file.pth MODEL.DEVICE cpu)")
    return parser.parse_args(argv)


def image_files(paths):
    """The images named, with each folder replaced by its images (sorted)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"No image ({', '.join(IMAGE_SUFFIXES)}) in the folder {path!r}.")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"Image not found: {path!r}. Give image files or folders of images.")
    return files


def setup_cfg(args):
    """get_cfg() + our keys + the config file + --opts (as tools/train_net.py), the score thresholds; CPU without
    a GPU. MODEL.WEIGHTS is taken out: our checkpointer loads it (DefaultPredictor's reads Detectron2 files
    only)."""
    import torch
    from detectron2.config import get_cfg

    from effvit_plugins.detectron2 import add_effvit_config

    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"Config file not found: {args.config_file!r} (our Detectron2 configs are under "
                                f"configs/detectron2/).")
    cfg = add_effvit_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = args.confidence_threshold
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    weights, cfg.MODEL.WEIGHTS = cfg.MODEL.WEIGHTS, ""
    cfg.freeze()
    return cfg, weights


def draw(predictions, image_rgb, metadata):
    """Detectron2's Visualizer on one output of the predictor: the semantic segmentation or the instances."""
    from detectron2.utils.visualizer import Visualizer

    visualizer = Visualizer(image_rgb, metadata)
    if "sem_seg" in predictions:
        return visualizer.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to("cpu"))
    return visualizer.draw_instance_predictions(predictions["instances"].to("cpu"))


def main(argv=None):
    args = parse_args(argv)
    try:
        images = image_files(args.input)
        cfg, weights = setup_cfg(args)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from detectron2.data import MetadataCatalog
    from detectron2.data.detection_utils import read_image
    from detectron2.engine import DefaultPredictor
    from detectron2.utils.logger import setup_logger

    from effvit_plugins.detectron2 import EffViTCheckpointer

    setup_logger()  # Detectron2's log (checkpoint loading)
    predictor = DefaultPredictor(cfg)
    if weights:
        EffViTCheckpointer(predictor.model).load(weights)
    else:
        logger.warning("No MODEL.WEIGHTS: the model is randomly initialised; the pictures show its untrained "
                       "predictions.")
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
    os.makedirs(args.output, exist_ok=True)
    written = []
    for path in images:
        image = read_image(path, format="BGR")  # DefaultPredictor takes BGR and converts to INPUT.FORMAT
        picture = draw(predictor(image), image[:, :, ::-1], metadata)
        out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        picture.save(out)
        written.append(out)
    print(f"{len(written)} picture(s) written to {args.output}:")
    for f in written:
        print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
