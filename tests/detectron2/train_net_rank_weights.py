"""tools/train_net.py with one more hook: each process saves its model's weights before and after training to
``OUTPUT_DIR/weights_rank<rank>_{start,end}.pth`` (for tests/detectron2/test_distributed.py).

Run as a script with train_net.py's arguments. Detectron2's ``launch`` spawns new interpreters that run this file's
top level again (not the ``__main__`` block) before they call ``train_net.main``: the trainer class is swapped there,
so every process trains with the hook.
"""
import os
import sys

import torch

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")
sys.path.insert(0, TOOLS)

import train_net  # noqa: E402
from detectron2.engine import HookBase  # noqa: E402
from detectron2.utils import comm  # noqa: E402


class SaveRankWeights(HookBase):
    def _save(self, tag):
        model = self.trainer.model
        model = getattr(model, "module", model)  # (DistributedDataParallel)
        out = self.trainer.cfg.OUTPUT_DIR
        os.makedirs(out, exist_ok=True)
        torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                   os.path.join(out, f"weights_rank{comm.get_rank()}_{tag}.pth"))

    def before_train(self):
        self._save("start")

    def after_train(self):
        self._save("end")


class RankWeightsTrainer(train_net.Trainer):
    def build_hooks(self):
        return super().build_hooks() + [SaveRankWeights()]


train_net.Trainer = RankWeightsTrainer

if __name__ == "__main__":
    train_net.invoke_main()
