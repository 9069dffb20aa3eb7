#!/usr/bin/env python
"""Detectron2 training / evaluation of our configs (Detectron2's standard ``train_net.py`` command line).

    python tools/train_net.py --config-file configs/detectron2/COCO-InstanceSegmentation/<config>.yaml \
        [--num-gpus N] [--resume] [--eval-only] [KEY VALUE ...]

``KEY VALUE`` pairs override the config (e.g. ``MODEL.WEIGHTS efficientvit_b1_r224.pt OUTPUT_DIR out/``).
``MODEL.WEIGHTS`` may be an official weight file of any of our families (converted on load), a file written by
``tools/convert_checkpoint.py --to detectron2``, or a Detectron2 checkpoint. ``--resume`` continues from the last
checkpoint in ``OUTPUT_DIR``; ``--eval-only`` evaluates ``MODEL.WEIGHTS`` (or, with ``--resume``, the last
checkpoint). Without a GPU the model runs on the CPU (``MODEL.DEVICE cpu``).

Several processes: ``--num-gpus N`` starts N processes on this machine (``--num-machines M --machine-rank R
--dist-url tcp://HOST:PORT`` on each of M machines), one per GPU with NCCL, or, without a GPU or with ``MODEL.DEVICE
cpu``, N CPU processes with gloo (GPUs are then hidden from them). ``SOLVER.IMS_PER_BATCH`` is the total batch of
all processes (N x M processes read IMS_PER_BATCH / (N x M) images each): the same config trains the same model
on 1 or N processes.

Datasets are read from ``$DETECTRON2_DATASETS`` (default ``./datasets``) in Detectron2's layout; the
generated demo sets (``tools/generate_demo_data.py``) are registered as ``coco_demo_*``, ``lvis_v1_demo_*`` and
``cityscapes_demo_sem_seg_*``. A missing dataset stops the run at once (exit status 2) with where we looked and how
to get or generate it.
"""
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.evaluation import verify_results  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from effvit_plugins.detectron2 import (DatasetMissingError, EffViTCheckpointer, Trainer,  # noqa: E402
                                       add_effvit_config, check_datasets)

logger = logging.getLogger("effvit_plugins.train_net")


def load_cfg(args):
    """get_cfg() + our keys + the config file + the command-line overrides; CPU when there is no GPU."""
    cfg = add_effvit_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def setup(args):
    cfg = load_cfg(args)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        logger.info(Trainer.describe(cfg, model))
        EffViTCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    logger.info(Trainer.describe(cfg, trainer.model))
    trainer.resume_or_load(resume=args.resume)
    if trainer.start_iter >= trainer.max_iter:
        logger.info(f"Nothing to train: the last checkpoint is at iteration {trainer.start_iter} of "
                    f"{trainer.max_iter} (SOLVER.MAX_ITER).")
    return trainer.train()


def check_before_launch(args) -> None:
    """Stop before any worker starts when the config's datasets are missing or there are fewer GPUs than
    ``--num-gpus`` (exit 2, no traceback); hide the GPUs from CPU processes (``MODEL.DEVICE cpu``), which
    Detectron2's ``launch`` would otherwise give NCCL and a GPU each."""
    cfg = load_cfg(args)
    if cfg.MODEL.DEVICE.startswith("cuda") and args.num_gpus > torch.cuda.device_count():
        print(f"error: --num-gpus {args.num_gpus} but this machine has {torch.cuda.device_count()} GPU(s); start at "
              "most that many processes, or add `MODEL.DEVICE cpu` to run CPU processes", file=sys.stderr)
        sys.exit(2)
    if args.num_gpus * args.num_machines > 1 and not cfg.MODEL.DEVICE.startswith("cuda") and \
            torch.cuda.is_available():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the spawned processes then use gloo and stay off the GPUs
    names = tuple(cfg.DATASETS.TEST) if args.eval_only else tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST)
    try:
        check_datasets(names)
    except DatasetMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def invoke_main(argv=None):
    args = default_argument_parser().parse_args(argv)
    if not args.config_file:
        print("error: --config-file is required (e.g. configs/detectron2/COCO-InstanceSegmentation/"
              "mask_rcnn_efficientvit_mit_b1_fpn_1x.yaml)", file=sys.stderr)
        sys.exit(2)
    if not os.path.isfile(args.config_file):
        print(f"error: config file {args.config_file!r} not found", file=sys.stderr)
        sys.exit(2)
    check_before_launch(args)
    print("Command Line Args:", args)
    return launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                  dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    invoke_main()
