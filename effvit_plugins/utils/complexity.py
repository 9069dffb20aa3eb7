"""Parameter and MAC counting.

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs of convolutions, matmuls and
linear layers, divided by 2), which is the counter the published/official figures in our tables were
reproduced with. The forward pass can run on the ``meta`` device so that large models at 1024x2048 are
counted in seconds without allocating activations.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int], device: str = "meta",
               forward: Optional[Callable[[nn.Module, torch.Tensor], object]] = None) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on a tensor of ``input_shape`` (N, C, H, W).

    ``device='meta'`` counts on a copy of the model moved to the meta device (no real arithmetic).
    ``forward(model, x)`` may replace ``model(x)`` (e.g. to call a segmentor's ``_forward``).
    """
    on_meta = next(iter(model.parameters()), torch.empty(0)).device.type == "meta"
    m = (model if on_meta else copy.deepcopy(model)).eval()
    if device == "meta" and not on_meta:
        m = m.to_empty(device="meta")
    else:
        m = m.to(device)
    x = torch.empty(tuple(input_shape), device=device) if device == "meta" else torch.randn(tuple(input_shape), device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        if forward is None:
            m(x)
        else:
            forward(m, x)
    return counter.get_total_flops() // 2
