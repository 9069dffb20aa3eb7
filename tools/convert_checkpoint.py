#!/usr/bin/env python
"""Convert an official checkpoint into our layout.

    python tools/convert_checkpoint.py SRC DST [--family NAME] [--to {mm,detectron2}]

SRC: an official release file -- wrapped in 'state_dict' / 'model' or bare; classification, segmentation
(EfficientViT-MIT, EfficientFormer mmseg 0.x) or detection (EfficientFormer mmdet 2.x; the official EfficientViT-MSRA
detectors need no conversion). The family is detected from the keys unless --family is given. DST loads with
0 missing / 0 unexpected keys into the model of the matching config: detection -> mmdet detector (backbone.*,
neck.*, rpn_head.* / roi_head.* / bbox_head.*), segmentation -> mmseg EncoderDecoder (backbone.*, decode_head.*),
classification -> mmpretrain ImageClassifier (backbone.*, head.*). SRC is read with torch.load(weights_only=True);
it may be a local path, an http(s):// URL (downloaded once to the torch hub cache and checked against the SHA-256
prefix in its file name, if it has one) or an mmengine model-zoo name.

--to detectron2 writes the backbone alone under Detectron2's names (``backbone.bottom_up.*``, the place of the
backbone in every FPN model of configs/detectron2/): for ``MODEL.WEIGHTS`` or a LazyConfig's
``train.init_checkpoint`` (tools/train_net.py also takes the official file directly).

The conversion is :func:`effvit_plugins.convert.convert_file`; this script is its command line.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    from effvit_plugins.checkpoint import CheckpointError
    from effvit_plugins.convert import CONVERT_TARGETS, convert_file
    from effvit_plugins.models.spec import family_keys

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="official checkpoint: a local path or an http(s):// URL")
    p.add_argument("dst", help="output file (a {'state_dict': ..., 'meta': ...} dict)")
    p.add_argument("--family", choices=sorted(family_keys()), default=None,
                   help="model family (default: detected from the checkpoint's keys)")
    p.add_argument("--to", choices=CONVERT_TARGETS, default="mm",
                   help="output layout: OpenMMLab model (default) or the backbone of a Detectron2 model")
    args = p.parse_args(argv)
    try:
        print(convert_file(args.src, args.dst, args.family, args.to))
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
