"""Runner checkpoints load on torch >= 2.6 with weights_only=True plus an allow-list; anything else is refused."""
import collections
import os

import numpy as np
import pytest
import torch

import effvit_plugins  # noqa: F401  (applies the patch)
from effvit_plugins.mm.compat import load_runner_checkpoint


class NotAllowed:
    pass


def test_runner_state_with_history_buffers_and_numpy_loads(tmp_path):
    from mmengine.logging import HistoryBuffer, MessageHub
    from mmengine.runner.checkpoint import _load_checkpoint, save_checkpoint
    hub = MessageHub.get_instance("compat_test")
    for i in range(3):
        hub.update_scalar("train/loss", float(i))
    hub.update_info("iter", np.int64(7))
    ckpt = {"meta": {"iter": 7, "seed": np.int64(3), "hist": np.arange(4.0)},
            "state_dict": collections.OrderedDict(w=torch.ones(2)), "message_hub": hub.state_dict()}
    save_checkpoint(ckpt, str(tmp_path / "iter_7.pth"))
    out = _load_checkpoint(str(tmp_path / "iter_7.pth"), map_location="cpu")  # mmengine's own entry point
    assert out["meta"]["iter"] == 7 and np.array_equal(out["meta"]["hist"], np.arange(4.0))
    buf = out["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buf, HistoryBuffer) and buf.mean() == 1.0 and buf.current() == 2.0


def test_other_globals_are_refused(tmp_path):
    torch.save({"state_dict": {}, "x": NotAllowed()}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="Refusing to unpickle .*NotAllowed"):
        load_runner_checkpoint(str(tmp_path / "bad.pth"))


def test_checkpoint_saved_by_stock_mmengine_loads(tmp_path):
    """HistoryBuffer pickled the stock way (with getattr(HistoryBuffer, 'min') references) still loads, and a
    getattr on anything else is refused."""
    import pickle
    from mmengine.logging import HistoryBuffer
    from effvit_plugins.mm import compat

    buf = HistoryBuffer()
    buf.update(3.0)
    stock_state = dict(buf.__dict__, statistics_methods=dict(HistoryBuffer._statistics_methods))
    buf.__getstate__ = lambda: stock_state  # instance override = mmengine's original pickling
    torch.save({"message_hub": {"log_scalars": {"loss": buf}}}, tmp_path / "stock.pth")
    assert "builtins.getattr" in torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / "stock.pth"))
    out = load_runner_checkpoint(str(tmp_path / "stock.pth"))
    assert out["message_hub"]["log_scalars"]["loss"].current() == 3.0
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        compat._history_buffer_getattr(object, "__subclasses__")


class RunsCode:
    """Unpickling this runs a shell command: what weights_only loading exists to prevent."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious_runner_checkpoint(tmp_path):
    marker = tmp_path / "code_was_run"
    path = tmp_path / "iter_1.pth"
    torch.save({"meta": {"iter": 1, "epoch": 0, "payload": RunsCode(marker)},
                "state_dict": collections.OrderedDict(weight=torch.ones(2, 2), bias=torch.zeros(2)),
                "message_hub": {}}, path)
    return str(path), marker


REFUSED = r"Refusing to unpickle .*iter_1\.pth.*posix\.system"


def test_disallowed_checkpoint_refused_by_mmengine_load_checkpoint(tmp_path):
    from mmengine.runner import load_checkpoint

    path, marker = _malicious_runner_checkpoint(tmp_path)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match=REFUSED):
        load_checkpoint(model, path, map_location="cpu")
    assert not marker.exists()


def test_disallowed_checkpoint_refused_by_runner_resume_and_load_from(tmp_path):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Tiny(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, inputs=None, data_samples=None, mode="tensor"):
            return self.linear(inputs)

    path, marker = _malicious_runner_checkpoint(tmp_path)
    runner = Runner(model=Tiny(), work_dir=str(tmp_path / "work"), experiment_name="compat_resume_refused")
    with pytest.raises(RuntimeError, match=REFUSED):
        runner.resume(path)
    with pytest.raises(RuntimeError, match=REFUSED):
        runner.load_checkpoint(path)  # what load_from=... does
    assert not marker.exists()
    # the message tells a user who trusts the file what to do
    with pytest.raises(RuntimeError, match=r"If you trust this file, extract its tensors"):
        runner.resume(path)



def test_message_hub_updates_stay_out_of_compiled_code():
    """With a config's ``clip_grad``, ``OptimWrapper`` logs ``float(grad_norm)`` through the message hub inside the
    ``train_step`` that ``compile=True`` compiles; traced, ``HistoryBuffer.update`` guarded on the value and
    recompiled at every step. The patch runs the hub's updates eagerly: the compilations stop after the first steps."""
    from mmengine.logging import MessageHub
    from mmengine.optim import OptimWrapper
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    torch.manual_seed(0)
    hub = MessageHub.get_instance("effvit-compile-test")  # the wrapper logs into the newest hub
    model = torch.nn.Linear(3, 1)
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), clip_grad=dict(max_norm=1.0))
    counter = CompileCounter()

    @torch.compile(backend=counter)
    def step(x):
        optim_wrapper.update_params(model(x).square().sum())

    counts = []
    for _ in range(6):
        step(torch.randn(4, 3))
        counts.append(counter.frame_count)
    assert len(hub.get_scalar("train/grad_norm").data[0]) == 6  # still logged at every step
    assert counts[-1] == counts[2], f"compilations after each step: {counts}"
