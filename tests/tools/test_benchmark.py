"""``tools/benchmark.py --suite train`` on small inputs: each row's step runs and trains (parameters change), the
compiled column runs (``aot_eager``, the cheap backend; the published table uses inductor), the memory probe measures
a step in a fresh process and ``with_cp`` lowers it, and bad arguments are refused with the valid choices.

The numbers themselves depend on the machine and are not asserted, except the memory drop with ``with_cp``, which
is what the switch is for (the table: docs/benchmarks.md, section 6).
"""
import importlib.util
import os.path as osp

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("effvit_benchmark_tool", osp.join(ROOT, "tools", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row_named(bench, name):
    index = [i for i, r in enumerate(bench.TRAIN_ROWS) if r[0] == name and r[6]]
    assert index, [r[0] for r in bench.TRAIN_ROWS]
    return index[0], bench.TRAIN_ROWS[index[0]]


def table_row(output, name):
    lines = [ln for ln in output.splitlines() if ln.startswith(name + " ")]
    assert len(lines) == 1, output
    return lines[0][len(name):].split()


def test_train_suite_prints_the_time_columns(bench, capsys):
    name = "backbone EfficientViT-MSRA-M4"  # the smallest row with a timm counterpart
    bench.main(["--suite", "train", "--variants", name.lower(), "--train-size", "64", "64", "--train-batch", "2",
                "--repeat", "1", "--warmup", "0", "--compile-backend", "aot_eager", "--no-memory"])
    cols = table_row(capsys.readouterr().out, name)
    assert cols[0] == "2x64x64", cols
    # eager ms, compile ms, x eager, timm ms, x timm; then the memory columns (MiB, with_cp, ratio, timm), left out
    assert all(float(v) > 0 for v in cols[1:6]) and cols[6:] == ["-"] * 4, cols


@pytest.mark.parametrize("what", ["ours", "with_cp", "timm"])
def test_train_step_updates_the_parameters(bench, what):
    _, row = row_named(bench, "backbone EfficientViT-MSRA-M4")
    args = bench.parse_args(["--suite", "train", "--train-size", "64", "64", "--train-batch", "2"])
    model, step, _ = bench.build_train_step(args, row, what)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    graded = set()  # parameters with a non-zero gradient (not those behind zero-initialised BN weights at step 1)
    for k, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, k=k: graded.add(k) if p.grad.abs().sum() > 0 else None)
    loss = step()
    assert torch.isfinite(loss) and graded
    unchanged = [k for k, p in model.named_parameters() if k in graded and torch.equal(before[k], p)]
    assert not unchanged, unchanged


def test_segmentor_step_runs_through_train_step(bench):
    """The mm rows call the model's ``train_step`` with the config's optimiser wrapper on a generated batch."""
    _, row = row_named(bench, "EfficientViT-B1 + SegHead")
    args = bench.parse_args(["--suite", "train", "--train-size", "64", "128", "--train-batch", "1"])
    _, step, compiled = bench.build_train_step(args, row)
    losses = step()
    assert {"decode.loss_ce", "decode.acc_seg"} <= set(losses) and torch.isfinite(losses["decode.loss_ce"])
    assert callable(compiled)


def test_with_cp_lowers_the_step_memory(bench):
    """Peak RSS growth of one step of the B1 backbone at 256x512 batch 2, each in a fresh process."""
    index, _ = row_named(bench, "backbone EfficientViT-B1")
    args = bench.parse_args(["--suite", "train", "--train-size", "256", "512", "--train-batch", "2"])
    plain = bench._probe_memory(args, index, "ours")
    with_cp = bench._probe_memory(args, index, "with_cp")
    assert plain > 50 and with_cp < 0.6 * plain, (plain, with_cp)


@pytest.mark.parametrize("argv, message", [
    (["--variants", "no-such-model"], "match no train row"),
    (["--dtype", "bfloat16"], "AmpOptimWrapper"),
])
def test_bad_arguments_name_the_fix(bench, argv, message):
    with pytest.raises(SystemExit, match=message):
        bench.main(["--suite", "train", "--no-memory", "--compile-backend", "none"] + argv)


def test_bad_sizes_are_refused(bench, capsys):
    for argv in (["--train-batch", "0"], ["--train-size", "16", "16"]):
        with pytest.raises(SystemExit):
            bench.parse_args(["--suite", "train"] + argv)
        assert "--train-" in capsys.readouterr().err
