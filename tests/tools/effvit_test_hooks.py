"""Hooks the distributed-training test adds to the demo config (``custom_imports``; this folder on PYTHONPATH)."""
import os

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class EvalModeNormsHook(Hook):
    """Every BatchNorm in eval mode while training (running statistics used and kept), so that a step does not
    depend on how a batch is split across processes."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        for m in runner.model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


@HOOKS.register_module()
class SaveRankWeightsHook(Hook):
    """Every process writes its weights before and after training to ``work_dir/weights_rank<r>_{start,end}.pth``
    (the checkpoint hook saves rank 0 only)."""

    def _save(self, runner, tag):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        torch.save(model.state_dict(), os.path.join(runner.work_dir, f"weights_rank{get_rank()}_{tag}.pth"))

    def before_train(self, runner):
        self._save(runner, "start")

    def after_train(self, runner):
        self._save(runner, "end")
