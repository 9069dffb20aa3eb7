#!/usr/bin/env python
"""Convert an official checkpoint into our layout.

    python tools/convert_checkpoint.py SRC DST [--family NAME] [--to {mm,detectron2}]

SRC: an official release file -- wrapped in 'state_dict' / 'model' or bare; classification, segmentation
(EfficientViT-MIT, EfficientFormer mmseg 0.x) or detection (EfficientFormer mmdet 2.x; the official EfficientViT-MSRA
detectors need no conversion). The family is detected from the keys unless --family is given. DST loads with
0 missing / 0 unexpected keys into the model of the matching config: detection -> mmdet detector (backbone.*,
neck.*, rpn_head.* / roi_head.* / bbox_head.*), segmentation -> mmseg EncoderDecoder (backbone.*, decode_head.*),
classification -> mmpretrain ImageClassifier (backbone.*, head.*). SRC is read with torch.load(weights_only=True).

--to detectron2 writes the backbone alone under Detectron2's names (``backbone.bottom_up.*``, the place of the
backbone in every FPN model of configs/detectron2/): for ``MODEL.WEIGHTS`` or a LazyConfig's
``train.init_checkpoint`` (tools/train_net.py also takes the official file directly).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    from effvit_plugins.checkpoint import CheckpointError, load_weights_file, unwrap_state_dict
    from effvit_plugins.convert import FAMILIES, convert_official

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="official checkpoint file")
    p.add_argument("dst", help="output file (a {'state_dict': ..., 'meta': ...} dict)")
    p.add_argument("--family", choices=sorted(FAMILIES), default=None,
                   help="model family (default: detected from the checkpoint's keys)")
    p.add_argument("--to", choices=("mm", "detectron2"), default="mm",
                   help="output layout: OpenMMLab model (default) or the backbone of a Detectron2 model")
    args = p.parse_args(argv)
    import torch

    try:
        sd = unwrap_state_dict(load_weights_file(args.src))
        family, out = convert_official(sd, args.family)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.to == "detectron2":
        from effvit_plugins.detectron2.checkpoint import BACKBONE_PREFIX as D2_BACKBONE_PREFIX

        model = {D2_BACKBONE_PREFIX + k[len("backbone."):]: v for k, v in out.items() if k.startswith("backbone.")}
        os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
        torch.save({"model": model, "__author__": "effvit_plugins", "converted_from": os.path.basename(args.src),
                    "family": family}, args.dst)
        print(f"{FAMILIES[family][1]} backbone for Detectron2: {len(model)} tensors ({D2_BACKBONE_PREFIX}*), "
              f"saved to {args.dst}")
        return 0
    if any(k.startswith(("rpn_head.", "roi_head.", "bbox_head.")) for k in out):
        task = "detection"
    elif any(k.startswith("decode_head.") for k in out):
        task = "segmentation"
    else:
        task = "classification"
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save({"state_dict": out, "meta": {"converted_from": os.path.basename(args.src), "family": family,
                                            "task": task}}, args.dst)
    print(f"{FAMILIES[family][1]} {task} checkpoint: {len(sd)} tensors -> {len(out)} tensors, saved to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
