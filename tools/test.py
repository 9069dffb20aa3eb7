#!/usr/bin/env python
"""Test (and evaluate) a checkpoint with a config -- the mmseg / mmdet tools/test.py CLI.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out PATH] [--show] [--show-dir DIR]
                         [--wait-time S] [--cfg-options k=v ...] [--launcher ...] [--tta]

The config's ``default_scope`` picks the library: mmseg (segmentors, mIoU), mmdet (detectors: box / mask mAP from
pycocotools' COCOeval or the LVIS API) or mmpretrain. Runner checkpoints written by tools/train.py load on
torch >= 2.6 (``import effvit_plugins`` routes mmengine's loader through a weights_only=True allow-list, see
effvit_plugins/mm/compat.py). A missing dataset or checkpoint is reported in one message with exit status 2.

--show-dir DIR:
  mmseg: the colour-overlay images (ground truth | prediction, drawn by SegVisualizationHook) are written straight
    into DIR as ``test_<image file name>_<iter>.png``; the hook draws every ``interval``-th image
    (``default_hooks.visualization.interval``, 50 in mmseg's schedules; our demo config uses 1).
  mmdet: every test image with its ground truth (left) and the predicted boxes, masks, classes and scores (right,
    score >= ``default_hooks.visualization.score_thr``, 0.3 by default), drawn by DetVisualizationHook, written
    straight into DIR under the image's file name.
--out: mmseg: a directory of PNG label maps; mmdet: a pickle file of the raw predictions (as mmdet's script).
"""
import argparse
import glob
import os
import os.path as osp
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description="Test (and evaluate) a segmentor / detector checkpoint")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="directory for the logs and the evaluation metrics (json)")
    parser.add_argument("--out", type=str,
                        help="mmseg: directory for the predicted PNG label maps; mmdet: a .pkl file of the raw "
                             "predictions (offline evaluation)")
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
    """Turn on drawing in the visualization hook: SegVisualizationHook (mmseg: the local backend writes the PNGs
    into show_dir) or DetVisualizationHook (mmdet: ``test_out_dir``)."""
    hooks = cfg.get("default_hooks") or {}
    if "visualization" not in hooks:
        fail("--show/--show-dir need a visualization hook in the config: default_hooks = "
             "dict(visualization=dict(type='SegVisualizationHook'))  (mmdet: type='DetVisualizationHook')")
    hook = hooks["visualization"]
    hook["draw"] = True
    if args.show:
        hook["show"] = True
        hook["wait_time"] = args.wait_time
    if not args.show_dir:
        return
    show_dir = osp.abspath(args.show_dir)
    if _is_det(cfg):
        # DetVisualizationHook joins work_dir/timestamp with test_out_dir on every iteration: absolute stays put
        hook["test_out_dir"] = show_dir
        return
    if cfg.get("visualizer") is None:
        fail("--show-dir needs a `visualizer` in the config, e.g. "
             "visualizer = dict(type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')])")
    backends = [dict(b) for b in (cfg.visualizer.get("vis_backends") or [])]
    local = [b for b in backends if b.get("type") == "LocalVisBackend"]
    if not local:
        local = [dict(type="LocalVisBackend")]
        backends += local
    for b in local:
        # an absolute img_save_dir is kept as is by LocalVisBackend (os.path.join), so images land in show_dir
        b["img_save_dir"] = show_dir
    cfg.visualizer["vis_backends"] = backends


def _is_det(cfg) -> bool:
    return cfg.get("default_scope", "mmseg") == "mmdet"


def _evaluators(cfg) -> list:
    ev = cfg.get("test_evaluator")
    return list(ev) if isinstance(ev, (list, tuple)) else [ev] if ev is not None else []


def set_output(cfg, args) -> None:
    """--out: mmseg writes PNG label maps (evaluator output_dir); mmdet dumps the raw predictions (DumpDetResults)."""
    if _is_det(cfg):
        if not args.out.endswith((".pkl", ".pickle")):
            fail(f"--out for a detector is a pickle file of the predictions (*.pkl), got {args.out!r}")
        evaluators = _evaluators(cfg)
        evaluators.append(dict(type="DumpDetResults", out_file_path=args.out))
        cfg.test_evaluator = evaluators
        return
    for ev in _evaluators(cfg):
        ev["output_dir"] = args.out
        ev["keep_results"] = True


# metric keys of mmdet's CocoMetric ('coco/bbox_mAP', 'coco/bbox_mAP_50', ...) and LVISMetric ('lvis/segm_AP',
# 'lvis/segm_AP50', ..., 'lvis/segm_APr'): (label, key suffixes)
_DET_SUMMARY = (("AP50", ("mAP_50", "AP50")), ("AP75", ("mAP_75", "AP75")), ("APr", ("APr",)), ("APc", ("APc",)),
                ("APf", ("APf",)))


def empty_result_lines(cfg, metrics: dict) -> list:
    """mmdet's COCO / LVIS metrics return nothing when no image has a detection above the score threshold (an
    untrained model): say so, with the mAP that empty results have."""
    lines = []
    for ev in _evaluators(cfg):
        tasks = ev.get("metric", "bbox")
        for task in [tasks] if isinstance(tasks, str) else tasks:
            if task in ("bbox", "segm") and not any(k.endswith(f"/{task}_mAP") or k.endswith(f"/{task}_AP")
                                                    for k in metrics):
                lines.append(f"{task} mAP: 0.000  (no detection on any image: {ev.get('type')} reported nothing)")
    return lines


def metric_lines(metrics: dict) -> list:
    """The lines printed after testing: mIoU / mAcc / aAcc (mmseg); ``bbox mAP: ...`` / ``segm mAP: ...`` (mmdet,
    COCO or LVIS; values in [0, 1] as pycocotools and the LVIS API report them); then every other metric."""
    lines, used = [], set()
    for key in ("mIoU", "mAcc", "aAcc"):
        if key in metrics:
            lines.append(f"{key}: {metrics[key]:.2f}")
            used.add(key)
    for task in ("bbox", "segm"):
        for dataset in ("coco", "lvis"):
            main = next((f"{dataset}/{task}_{k}" for k in ("mAP", "AP") if f"{dataset}/{task}_{k}" in metrics), None)
            if main is None:
                continue
            parts = [f"{label} {float(metrics[key]):.3f}" for label, suffixes in _DET_SUMMARY
                     for key in [f"{dataset}/{task}_{x}" for x in suffixes] if key in metrics]
            source = f"{dataset.upper()} {'COCOeval' if dataset == 'coco' else 'LVISEval'}"
            lines.append(f"{task} mAP: {float(metrics[main]):.3f}  ({', '.join(parts + [source])})")
            used.update(k for k in metrics if k.startswith(f"{dataset}/{task}_"))
    others = {k: v for k, v in metrics.items() if k not in used}
    if others:
        lines.append("Other metrics: " + ", ".join(f"{k}={v}" for k, v in others.items()))
    return lines


def main(argv=None):
    args = parse_args(argv)

    from effvit_plugins.mm.data_check import check_data_or_exit
    from effvit_plugins.mm.tools_common import UsageError, load_config, setup_distributed
    from effvit_plugins.resources import demo_runs

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
        set_output(cfg, args)

    check_data_or_exit(cfg, ["test_dataloader"], "tools/test.py", args.config, demo_runs())

    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    metrics = runner.test()

    from mmengine.dist import is_main_process

    if not is_main_process():
        return
    lines = ["", "=" * 60, f"Checkpoint: {args.checkpoint}"]
    lines += metric_lines(metrics or {})
    if _is_det(cfg):
        lines += empty_result_lines(cfg, metrics or {})
    lines.append(f"Logs and metrics (json): {runner.log_dir}")
    if args.out is not None:
        lines.append(f"Predictions: {osp.abspath(args.out)}")
    if args.show_dir:
        show_dir = osp.abspath(args.show_dir)
        if _is_det(cfg):
            n = len([f for f in os.listdir(show_dir) if not f.startswith(".")]) if osp.isdir(show_dir) else 0
            thr = cfg.default_hooks.visualization.get("score_thr", 0.3)
            lines.append(f"Images with boxes and masks (ground truth | prediction, score >= {thr}): {n} in {show_dir}")
        else:
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
