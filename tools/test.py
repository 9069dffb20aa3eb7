#!/usr/bin/env python
"""Test (and evaluate) a checkpoint with a config -- mmseg's tools/test.py CLI.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out DIR] [--show] [--show-dir DIR]
                         [--wait-time S] [--cfg-options k=v ...] [--launcher ...] [--tta]

Runner checkpoints written by tools/train.py load on torch >= 2.6 (``import effvit_plugins`` routes mmengine's
loader through a weights_only=True allow-list, see effvit_plugins/mm/compat.py). A missing dataset or
checkpoint is reported in one message with exit status 2.

--show-dir DIR: the colour-overlay images (ground truth | prediction, drawn by SegVisualizationHook) are written
straight into DIR as ``test_<image file name>_<iter>.png``; the hook draws every ``interval``-th image
(``default_hooks.visualization.interval``, 50 in mmseg's schedules; our demo config uses 1).
"""
import argparse
import glob
import os
import os.path as osp
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description="MMSeg test (and eval) a model")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="directory for the logs and the evaluation metrics (json)")
    parser.add_argument("--out", type=str,
                        help="directory to save the output predictions (PNG label maps) for offline evaluation")
    parser.add_argument("--show", action="store_true", help="show prediction results (needs a display)")
    parser.add_argument("--show-dir", help="directory where the painted (overlay) images will be saved")
    parser.add_argument("--wait-time", type=float, default=2, help="the interval of show (s)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override some settings in the used config, the key-value pair in xxx=yyy format "
                             "will be merged into the config file. A list value is written key=\"[a,b]\" or "
                             "key=a,b; nested lists/tuples like key=\"[(a,b),(c,d)]\" (quotes needed, no spaces).")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                        help="job launcher")
    parser.add_argument("--tta", action="store_true", help="test time augmentation (the config's tta_pipeline)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def fail(msg: str, code: int = 2):
    from effvit_plugins.mm.tools_common import fail as _fail

    _fail(msg, code)


def trigger_visualization_hook(cfg, args) -> None:
    """Turn on SegVisualizationHook drawing; with --show-dir the local backend writes the PNGs into show_dir."""
    hooks = cfg.get("default_hooks") or {}
    if "visualization" not in hooks:
        fail("--show/--show-dir need a visualization hook in the config: "
             "default_hooks = dict(visualization=dict(type='SegVisualizationHook'))")
    hook = hooks["visualization"]
    hook["draw"] = True
    if args.show:
        hook["show"] = True
        hook["wait_time"] = args.wait_time
    if args.show_dir:
        if cfg.get("visualizer") is None:
            fail("--show-dir needs a `visualizer` in the config, e.g. "
                 "visualizer = dict(type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')])")
        show_dir = osp.abspath(args.show_dir)
        backends = [dict(b) for b in (cfg.visualizer.get("vis_backends") or [])]
        local = [b for b in backends if b.get("type") == "LocalVisBackend"]
        if not local:
            local = [dict(type="LocalVisBackend")]
            backends += local
        for b in local:
            # an absolute img_save_dir is kept as is by LocalVisBackend (os.path.join), so images land in show_dir
            b["img_save_dir"] = show_dir
        cfg.visualizer["vis_backends"] = backends


def main(argv=None):
    args = parse_args(argv)

    from effvit_plugins.mm.data_check import check_data_or_exit
    from effvit_plugins.mm.tools_common import UsageError, load_config, setup_distributed

    cfg = load_config(args.config, args.cfg_options, launcher=args.launcher, work_dir=args.work_dir,
                      set_work_dir=True)
    try:
        setup_distributed(cfg)  # --launcher pytorch on CPUs (gloo), see tools/train.py
    except UsageError as e:
        fail(str(e))

    if "://" not in args.checkpoint and not osp.isfile(args.checkpoint):
        fail(f"checkpoint file not found: {args.checkpoint}"
             + ("" if osp.isabs(args.checkpoint) else f" (relative to the working directory {os.getcwd()})"))
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args)

    if args.tta:
        if cfg.get("tta_pipeline") is None or cfg.get("tta_model") is None:
            fail("--tta needs `tta_pipeline` and `tta_model` in the config "
                 "(e.g. tta_model = dict(type='SegTTAModel') and a TestTimeAug pipeline).")
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model

    if args.out is not None:
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        for ev in evaluators:
            ev["output_dir"] = args.out
            ev["keep_results"] = True

    check_data_or_exit(cfg, ["test_dataloader"], "tools/test.py", args.config)

    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    metrics = runner.test()

    from mmengine.dist import is_main_process

    if not is_main_process():
        return
    lines = ["", "=" * 60, f"Checkpoint: {args.checkpoint}"]
    if metrics:
        for key in ("mIoU", "mAcc", "aAcc"):
            if key in metrics:
                lines.append(f"{key}: {metrics[key]:.2f}")
        others = {k: v for k, v in metrics.items() if k not in ("mIoU", "mAcc", "aAcc")}
        if others:
            lines.append("Other metrics: " + ", ".join(f"{k}={v}" for k, v in others.items()))
    lines.append(f"Logs and metrics (json): {runner.log_dir}")
    if args.out is not None:
        lines.append(f"Predictions: {osp.abspath(args.out)}")
    if args.show_dir:
        show_dir = osp.abspath(args.show_dir)
        n = len(glob.glob(osp.join(show_dir, "test_*.png")))
        interval = cfg.default_hooks.visualization.get("interval", 50)
        lines.append(f"Overlay images (ground truth | prediction): {n} in {show_dir}")
        if interval != 1:
            lines.append(f"  (the hook draws every {interval}th image; "
                         f"--cfg-options default_hooks.visualization.interval=1 draws all)")
    lines.append("=" * 60)
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
