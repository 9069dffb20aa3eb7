#!/usr/bin/env python
"""Train a segmentor (or any OpenMMLab 2.x model) with one of our configs -- mmseg's tools/train.py CLI.

    python tools/train.py CONFIG [--work-dir DIR] [--resume] [--amp] [--cfg-options k=v ...]
                                 [--launcher {none,pytorch,slurm,mpi}] [--local-rank N]

Differences from mmseg's script, all about failing early and clearly:
  * `import effvit_plugins` first (registers our models, makes runner checkpoints load on torch >= 2.6);
  * a missing dataset is reported in one message (what was looked for, how to fix it), exit status 2;
  * `--amp` on a machine without a GPU says so instead of failing in mmengine's AmpOptimWrapper assertion;
  * `--launcher pytorch` works without a GPU (torchrun, gloo backend; mmengine 0.10.7's launcher insists on CUDA):
        torchrun --nproc_per_node 2 tools/train.py CONFIG --launcher pytorch \
            --cfg-options env_cfg.dist_cfg.backend=gloo
    and with the configs' default backend ('nccl') and no GPU it says exactly that.
work_dir: --work-dir > `work_dir` in the config > ./work_dirs/<config name>. --resume continues from the
latest checkpoint in work_dir (a specific file: --cfg-options load_from=FILE resume=True).
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description="Train a segmentor")
    parser.add_argument("config", help="train config file path")
    parser.add_argument("--work-dir", help="the dir to save logs and models")
    parser.add_argument("--resume", action="store_true", default=False,
                        help="resume from the latest checkpoint in the work_dir automatically")
    parser.add_argument("--amp", action="store_true", default=False,
                        help="enable automatic-mixed-precision training (needs a CUDA/NPU/MLU/MUSA device)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override some settings in the used config, the key-value pair in xxx=yyy format "
                             "will be merged into the config file. A list value is written key=\"[a,b]\" or "
                             "key=a,b; nested lists/tuples like key=\"[(a,b),(c,d)]\" (quotes needed, no spaces).")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                        help="job launcher")
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank; torchrun sets LOCAL_RANK
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def enable_amp(cfg) -> None:
    from mmengine.logging import print_log

    from effvit_plugins.mm.tools_common import accelerator_available, fail

    if not accelerator_available():
        fail("--amp (automatic mixed precision) needs a GPU (CUDA; or an Ascend NPU / MLU / MUSA device), "
             "but none is available here, so training would run on the CPU without AMP. Run without --amp on "
             "this machine, or on a machine with a GPU.")
    wrapper = cfg.optim_wrapper.get("type", "OptimWrapper")
    if wrapper == "AmpOptimWrapper":
        print_log("AMP training is already enabled in your config.", logger="current", level=logging.WARNING)
        return
    if wrapper != "OptimWrapper":
        fail(f"--amp only works with optim_wrapper type 'OptimWrapper' (it is switched to "
             f"'AmpOptimWrapper'), but this config uses '{wrapper}'.")
    cfg.optim_wrapper.type = "AmpOptimWrapper"
    cfg.optim_wrapper.loss_scale = "dynamic"


def runners_registry(cfg):
    import importlib

    try:
        return importlib.import_module(f"{cfg.get('default_scope', 'mmseg')}.registry").RUNNERS
    except (ImportError, AttributeError):
        from mmengine.registry import RUNNERS

        return RUNNERS


def main(argv=None):
    args = parse_args(argv)

    from effvit_plugins.mm.data_check import check_data_or_exit, train_dataloaders
    from effvit_plugins.mm.tools_common import UsageError, fail, load_config, setup_distributed
    from effvit_plugins.resources import demo_runs

    cfg = load_config(args.config, args.cfg_options, launcher=args.launcher, work_dir=args.work_dir,
                      set_work_dir=True)
    try:
        setup_distributed(cfg)
    except UsageError as e:
        fail(str(e))

    if args.amp:
        enable_amp(cfg)

    # auto-resume from the latest checkpoint in work_dir (as mmseg: the flag decides, not the config)
    cfg.resume = args.resume

    check_data_or_exit(cfg, train_dataloaders(cfg), "tools/train.py", args.config, demo_runs())

    from mmengine.runner import Runner

    if "runner_type" not in cfg:
        runner = Runner.from_cfg(cfg)
    else:  # a custom runner, from the registry of the config's scope (mmseg.registry.RUNNERS, ...)
        runner = runners_registry(cfg).build(cfg)
    runner.train()


if __name__ == "__main__":
    main()
