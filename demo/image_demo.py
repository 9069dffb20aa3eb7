#!/usr/bin/env python
"""Run a model of effvit_plugins on images and write the pictures (detections / instance masks, the segmentation
overlay, or the predicted class drawn on the image).

    python demo/image_demo.py IMAGE_OR_FOLDER CONFIG_OR_NAME [--weights W] [--out-dir D] [--device cpu]
                              [--score-thr 0.3] [--cfg-options KEY=VALUE ...]

CONFIG_OR_NAME is a config file or a model name of the model index (``python -c "from effvit_plugins.apis import
list_models; print(*list_models(), sep=chr(10))"``). The model's library decides the inferencer (mmdet's
DetInferencer, mmseg's MMSegInferencer or mmpretrain's ImageClassificationInferencer; see effvit_plugins.apis).
Pictures go to D/vis/ (mmseg also writes the label maps to D/pred/). Without --weights the model is randomly
initialised (a smoke test of the pipeline); ``--weights official`` loads the model's official weights listed in
its metafile, any other value is a checkpoint path or URL.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("image", help="an image file, or a folder: every image in it (not in subfolders)")
    parser.add_argument("model", help="a config file (configs/...py) or a model name of the model index")
    parser.add_argument("--weights", default=None,
                        help="checkpoint path or URL; 'official': the model's official weights (its metafile's "
                             "Weights); default: none (random initialisation)")
    parser.add_argument("--out-dir", default="outputs", help="where the pictures go (D/vis/); default: outputs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...; default: cpu")
    parser.add_argument("--score-thr", type=float, default=0.3,
                        help="detectors: draw boxes / masks scoring at least this; default: 0.3")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config settings, KEY=VALUE (e.g. "
                             "test_dataloader.dataset.pipeline.1.scale='(640,640)')")
    return parser.parse_args(argv)


def image_files(path: str):
    """The image itself, or the images of a folder (sorted)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"No image ({', '.join(IMAGE_SUFFIXES)}) in the folder {path!r}.")
        return files
    if not p.is_file():
        raise FileNotFoundError(f"Image not found: {path!r}. Give an image file or a folder of images.")
    return [str(p)]


def main(argv=None):
    args = parse_args(argv)
    try:
        images = image_files(args.image)
        from effvit_plugins import apis

        cfg, _ = apis.resolve(args.model, args.cfg_options)
        library = apis.library_of(cfg)
        inferencer = apis.inferencer(args.model, weights=args.weights, device=args.device,
                                     cfg_options=args.cfg_options)
    except (FileNotFoundError, KeyError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    vis_dir = os.path.join(args.out_dir, "vis")
    os.makedirs(vis_dir, exist_ok=True)
    if library == "mmdet":
        inferencer(images, out_dir=args.out_dir, pred_score_thr=args.score_thr, no_save_pred=True)
        written = [os.path.join(vis_dir, os.path.basename(f)) for f in images]
    elif library == "mmseg":
        inferencer(images, out_dir=args.out_dir)
        written = [os.path.join(vis_dir, os.path.basename(f)) for f in images]
    else:  # mmpretrain
        inferencer(images, show_dir=vis_dir)
        written = [os.path.join(vis_dir, Path(f).stem + ".png") for f in images]
    print(f"{len(written)} picture(s) written to {vis_dir}:")
    for f in written:
        print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
