"""Detectron2's own tool scripts (its source tree's tools/, commit 02b5c4e, from
effvit_plugins.testing.detectron2_tools_dir()), UNMODIFIED, on our yaml configs through the launcher
``python -m effvit_plugins.detectron2.run TOOL.py ARGS``:

* plain_train_net.py trains 2 iterations with AdamW and the config's SOLVER.BETAS (read back from the optimiser
  state it saved), loads an official-layout weight file given as MODEL.WEIGHTS, and evaluates;
* train_net.py (Detectron2's DefaultTrainer) trains with AdamW, SOLVER.WEIGHT_DECAY_ATTN_BIAS and WarmupPolyLR, and
  evaluates; analyze_model.py prints the parameter and flop tables;
* what cannot be honoured stops with a message: a DefaultTrainer subclass building SGD while SOLVER.OPTIMIZER is
  ADAMW, MODEL.DEVICE cuda without CUDA; --num-gpus 2 processes (CPU, gloo) carry the patches and wrap a CPU model
  in DDP.

Each tool gets the smallest variant of another family (families() in turn), images of 64 pixels and the generated
COCO demo set."""
import os
import re
import subprocess
import sys

import pytest
import torch

from effvit_plugins.detectron2.checkpoint import load_d2_checkpoint
from effvit_plugins.detectron2.solver import ATTENTION_BIAS_PARAMS
from effvit_plugins.models.spec import families
from effvit_plugins.testing import detectron2_tools_dir, official_state_dict, randomize_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FOLDERS = {"mask_rcnn": "COCO-InstanceSegmentation", "retinanet": "COCO-Detection"}
# small images, 2 iterations of 2 images, the demo sets, no weights to download, the CPU
TINY = ["MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "DATASETS.TRAIN",
        "('coco_demo_train',)", "DATASETS.TEST", "('coco_demo_val',)", "DATALOADER.NUM_WORKERS", "0"]
CPU = ["MODEL.DEVICE", "cpu"]


def family(i):
    """The i-th registered family (in turn, so the tools together see several)."""
    specs = families()
    return specs[i % len(specs)]


def config(kind, spec):
    """The generated COCO config (``mask_rcnn`` / ``retinanet``) of the family's smallest variant."""
    neck = "upfpn" if spec.upsample_neck else "fpn"
    return os.path.join(ROOT, "configs", "detectron2", FOLDERS[kind],
                        f"{kind}_{spec.d2_token}_{spec.variants[0]}_{neck}_1x.yaml")


def tool(name):
    return os.path.join(detectron2_tools_dir(), name)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2run_datasets")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "generate_demo_data.py"), "--dataset", "coco", "--out",
                    str(root / "coco_demo"), "--num-train", "4", "--num-val", "2", "--height", "64", "--width", "64"],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": ROOT})
    return root


def launch(script, *args, datasets, expect_rc=0, **env):
    """``python -m effvit_plugins.detectron2.run script args``; its output."""
    env = {**os.environ, "PYTHONPATH": ROOT, "DETECTRON2_DATASETS": str(datasets), **env}
    r = subprocess.run([sys.executable, "-m", "effvit_plugins.detectron2.run", str(script), *map(str, args)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == expect_rc, out[-4000:]
    return out


def adamw_groups(checkpoint):
    """The param_groups of the AdamW state in a saved checkpoint (fails for any other optimiser): plain_train_net.py
    saves it as "optimizer", DefaultTrainer in its trainer's state."""
    saved = load_d2_checkpoint(str(checkpoint))
    optimizer = saved["optimizer"] if "optimizer" in saved else saved["trainer"]["_trainer"]["optimizer"]
    groups = optimizer["param_groups"]
    # torch.optim.AdamW: Adam's moments per parameter, betas, and decoupled weight decay (SGD has momentum_buffer)
    assert all(g.get("decoupled_weight_decay") is True and "betas" in g for g in groups), groups
    assert optimizer["state"] and all({"exp_avg", "exp_avg_sq"} <= set(s) for s in optimizer["state"].values())
    return groups


def test_plain_train_net_adamw_official_weights_and_evaluation(datasets, tmp_path):
    spec = family(0)
    arch = spec.variants[0]
    # an official-layout ImageNet file of the family as MODEL.WEIGHTS (DetectionCheckpointer is EffViTCheckpointer)
    classifier = randomize_model(spec.classifier(arch), 0)
    torch.save({"state_dict": official_state_dict(classifier)}, tmp_path / "official.pth")
    out = tmp_path / "out"
    log = launch(tool("plain_train_net.py"), "--config-file", config("mask_rcnn", spec), *TINY, *CPU,
                 "MODEL.WEIGHTS", tmp_path / "official.pth", "SOLVER.BETAS", "(0.85, 0.99)", "OUTPUT_DIR", out,
                 datasets=datasets)
    assert "copypaste: Task: bbox" in log, log[-3000:]  # COCOEvaluator ran on coco_demo_val
    final = out / "model_final.pth"
    assert all(g["betas"] == (0.85, 0.99) for g in adamw_groups(final))
    # the backbone holds the official file's tensors (2 warm-up steps of lr ~1e-7 move them by far less than 1e-4)
    trained = load_d2_checkpoint(str(final))["model"]
    expected = {k[len("backbone."):]: v for k, v in classifier.state_dict().items() if k.startswith("backbone.")}
    compared = [k for k, v in expected.items() if v.is_floating_point() and "running_" not in k
                and ("backbone.bottom_up." + k) in trained and trained["backbone.bottom_up." + k].shape == v.shape]
    assert len(compared) > 0.5 * len(expected), (len(compared), len(expected))
    for k in compared:
        torch.testing.assert_close(trained["backbone.bottom_up." + k].float(), expected[k], rtol=0, atol=1e-4)


def has_attention_biases(spec):
    return any(n.rpartition(".")[2] in ATTENTION_BIAS_PARAMS
               for n, _ in spec.classifier(spec.variants[0]).named_parameters())


def test_train_net_default_trainer_adamw_attn_bias_decay_poly_lr(datasets, tmp_path):
    # the next family (from family(1) on) whose cores have attention-bias tables
    spec = next(s for s in (family(1 + i) for i in range(len(families()))) if has_attention_biases(s))
    out = tmp_path / "out"
    log = launch(tool("train_net.py"), "--config-file", config("retinanet", spec), *TINY, *CPU,
                 "SOLVER.WEIGHT_DECAY_ATTN_BIAS", "0.0123", "SOLVER.LR_SCHEDULER_NAME", "WarmupPolyLR",
                 "OUTPUT_DIR", out, datasets=datasets)
    assert "copypaste: Task: bbox" in log, log[-3000:]
    groups = adamw_groups(out / "model_final.pth")
    assert {g["weight_decay"] for g in groups} >= {0.05, 0.0}, groups  # the Base file's decay; none on norms
    assert any(g["weight_decay"] == 0.0123 for g in groups), groups  # SOLVER.WEIGHT_DECAY_ATTN_BIAS


def test_analyze_model_parameter_and_flop_tables(datasets):
    spec = family(2)
    log = launch(tool("analyze_model.py"), "--tasks", "parameter", "flop", "-n", "1", "--config-file",
                 config("mask_rcnn", spec), *TINY, *CPU, datasets=datasets)
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from effvit_plugins.detectron2 import add_effvit_config

    cfg = add_effvit_config(get_cfg())
    cfg.merge_from_file(config("mask_rcnn", spec))
    cfg.merge_from_list(CPU)
    n = sum(p.numel() for p in build_model(cfg).parameters())
    params = re.search(r"Parameter Count:\n(?:.*\n){2}\| model +\| ([\d.]+)M", log)
    assert params and float(params[1]) == round(n / 1e6, 1), (log[-3000:], n)
    assert "backbone.bottom_up" in log
    flops = re.search(r"Flops table computed from only one input sample:\n(?:.*\n){2}\| model +\| [\d.]+M +\| "
                      r"([\d.]+)G", log)
    assert flops and float(flops[1]) > 0, log[-3000:]


SGD_TRAINER = '''
import torch
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser


class SGDTrainer(DefaultTrainer):
    @classmethod
    def build_optimizer(cls, cfg, model):
        return torch.optim.SGD(model.parameters(), lr=cfg.SOLVER.BASE_LR, momentum=0.9)


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    trainer = SGDTrainer(cfg)
    trainer.train()
'''


def test_trainer_building_another_optimizer_stops(datasets, tmp_path):
    script = tmp_path / "sgd_train_net.py"
    script.write_text(SGD_TRAINER)
    log = launch(script, "--config-file", config("retinanet", family(3)), *TINY, *CPU, "OUTPUT_DIR", tmp_path / "out",
                 datasets=datasets, expect_rc=2)
    assert "SOLVER.OPTIMIZER is 'ADAMW' (torch.optim.adamw.AdamW) but SGDTrainer.build_optimizer built SGD" in log
    assert "Remove SGDTrainer.build_optimizer" in log and "effvit_plugins.detectron2.build_optimizer(cfg" in log
    assert "Traceback" not in log and "Starting training" not in log
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_cuda_device_without_cuda_stops(datasets, tmp_path):
    """The configs keep Detectron2's MODEL.DEVICE cuda; without CUDA the tool stops at build_model with the fix."""
    log = launch(tool("plain_train_net.py"), "--config-file", config("mask_rcnn", family(4)), *TINY,
                 "OUTPUT_DIR", tmp_path / "out", datasets=datasets, expect_rc=2, CUDA_VISIBLE_DEVICES="")
    assert "MODEL.DEVICE is 'cuda'" in log and "Add `MODEL.DEVICE cpu` to the command line" in log, log[-3000:]
    assert "Traceback" not in log


WORKERS = '''
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import create_ddp_model, default_argument_parser, launch
from detectron2.solver import build_lr_scheduler, build_optimizer
from detectron2.utils import comm


def main(args):
    cfg = get_cfg()
    print(f"rank {comm.get_rank()} of {comm.get_world_size()}: OPTIMIZER {cfg.SOLVER.OPTIMIZER}, "
          f"{build_optimizer.__module__}, {build_lr_scheduler.__module__}, {DetectionCheckpointer.__name__}",
          flush=True)
    import detectron2.engine.defaults
    import torch

    ddp = create_ddp_model(torch.nn.Linear(2, 2), broadcast_buffers=False)  # a CPU model
    print(f"rank {comm.get_rank()}: {type(ddp).__name__}, DefaultTrainer's the same: "
          f"{detectron2.engine.defaults.create_ddp_model is create_ddp_model}", flush=True)


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
'''


def test_launched_processes_carry_the_patches(datasets, tmp_path):
    """--num-gpus 2: Detectron2's launch() spawns 2 new interpreters (gloo on the CPU) that import the script before
    anything is patched; each still sees our keys, optimiser and checkpointer under the script's own names, and
    create_ddp_model wraps a CPU model (Detectron2's passes device_ids, which DDP refuses for CPU parameters)."""
    script = tmp_path / "workers.py"
    script.write_text(WORKERS)
    log = launch(script, "--num-gpus", 2, "--dist-url", "auto", datasets=datasets, CUDA_VISIBLE_DEVICES="")
    for rank in range(2):
        assert (f"rank {rank} of 2: OPTIMIZER SGD, effvit_plugins.detectron2.solver, effvit_plugins.detectron2.solver,"
                f" EffViTCheckpointer") in log, log[-3000:]
        assert f"rank {rank}: DistributedDataParallel, DefaultTrainer's the same: True" in log, log[-3000:]


def test_usage_errors(capsys):
    from effvit_plugins.detectron2.run import main

    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2 and "python -m effvit_plugins.detectron2.run TOOL.py" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "Detectron2's own tools" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"no such script 'nowhere/plain_train_net\.py'.*tools/plain_train_net\.py"):
        main(["nowhere/plain_train_net.py"])


def test_check_solver_names_each_key_not_honoured():
    """What the patched DefaultTrainer.__init__ checks, key by key (in-process: no patch needed)."""
    from detectron2.config import get_cfg
    from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler

    from effvit_plugins.detectron2 import add_effvit_config
    from effvit_plugins.detectron2.config import ConfigNotHonouredError
    from effvit_plugins.detectron2.solver import build_lr_scheduler, build_optimizer, check_solver

    model = torch.nn.Module()
    model.proj = torch.nn.Linear(4, 4)
    model.attention_biases = torch.nn.Parameter(torch.zeros(2, 3))
    cfg = add_effvit_config(get_cfg())
    cfg.merge_from_list(["SOLVER.OPTIMIZER", "ADAMW", "SOLVER.BETAS", "(0.8, 0.9)", "SOLVER.WEIGHT_DECAY_ATTN_BIAS",
                         "0.01", "SOLVER.LR_SCHEDULER_NAME", "WarmupPolyLR"])
    ours = build_optimizer(cfg, model)
    check_solver(cfg, ours, build_lr_scheduler(cfg, ours), model, built_by="T")  # what the keys say: passes

    def fails(optimizer, scheduler=None, match=""):
        with pytest.raises(ConfigNotHonouredError, match=match):
            check_solver(cfg, optimizer, scheduler or build_lr_scheduler(cfg, optimizer), model, built_by="T")

    fails(torch.optim.SGD(model.parameters(), lr=1e-3), match=r"SOLVER.OPTIMIZER is 'ADAMW' .* T.build_optimizer built"
                                                              r" SGD.*Remove T.build_optimizer")
    fails(torch.optim.Adam(model.parameters(), betas=(0.8, 0.9)), match="built Adam")
    fails(torch.optim.AdamW(model.parameters(), betas=(0.9, 0.999)), match=r"SOLVER.BETAS is \(0.8, 0.9\)")
    fails(torch.optim.AdamW(model.parameters(), betas=(0.8, 0.9), weight_decay=0.05),
          match=r"WEIGHT_DECAY_ATTN_BIAS is 0.01 .* attention_biases weight decay 0.05")
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
    other = d2_build_lr_scheduler(cfg, ours)
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    fails(ours, other, match=r"LR_SCHEDULER_NAME is 'WarmupPolyLR' but T.build_lr_scheduler built LRMultiplier.*"
                             r"Remove T.build_lr_scheduler")
