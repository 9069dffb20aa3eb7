"""BatchNorm folding for export: a copy of the model with every Conv -> BatchNorm pair merged into the Conv.

Our cores fold BN at inference through a cache that is bypassed while tracing, so without this step an exported
graph would carry a separate BatchNormalization after each convolution. The formula is the cores' own
(:func:`effvit_plugins.models.layers.fold_bn`); this module finds the pairs in any ``nn.Module``.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..models.layers import fold_bn

FOLD_PROBE_SIZE = 64  # input side of the forward pass that finds the conv -> BN pairs (any size works)


def _conv_bn_pairs(model: nn.Module, example) -> List[Tuple[str, str]]:
    """(conv name, bn name) for every BatchNorm whose input is exactly the output of one convolution.

    Found from one forward pass with autograd on (so our cores run the plain ``bn(conv(x))`` path) in eval mode:
    each BN call is matched to the convolution call that produced its input tensor. A BN fed by anything else in
    any call, or a convolution feeding several BNs, is left alone.
    """
    names = {m: n for n, m in model.named_modules()}
    produced: Dict[int, Tuple[nn.Module, torch.Tensor]] = {}
    conv_of: Dict[nn.Module, nn.Module] = {}
    bn_of: Dict[nn.Module, nn.Module] = {}
    rejected = set()

    def conv_hook(mod, inp, out):
        produced[id(out)] = (mod, out)  # keeps ``out`` alive, so ids stay unique during the pass

    def bn_hook(mod, inp, out):
        src = produced.get(id(inp[0]))
        if src is None or src[1] is not inp[0]:
            rejected.add(mod)
            return
        conv = src[0]
        if conv_of.setdefault(mod, conv) is not conv or bn_of.setdefault(conv, mod) is not mod:
            rejected.update((mod, conv))

    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, _BatchNorm):
            handles.append(m.register_forward_hook(bn_hook))
    try:
        with torch.enable_grad():
            model(*example) if isinstance(example, tuple) else model(example)
    finally:
        for h in handles:
            h.remove()
    return [(names[conv], names[bn]) for bn, conv in conv_of.items()
            if bn not in rejected and conv not in rejected and bn_of.get(conv) is bn]


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example=None) -> Tuple[nn.Module, int]:
    """A copy of ``model`` (eval mode) with every eval-mode BatchNorm that directly follows a convolution folded
    into that convolution's weight and bias (:func:`~effvit_plugins.models.layers.fold_bn`, the formula the cores
    use at inference), the BatchNorm replaced by ``nn.Identity``. Returns ``(copy, count)``.

    ``example``: an input for the pairing forward pass, or a tuple of inputs (default: a 64x64 RGB image; our
    backbones run at any size).
    """
    folded = copy.deepcopy(model).eval()
    if example is None:
        p = next(folded.parameters(), None)
        example = torch.randn(1, 3, FOLD_PROBE_SIZE, FOLD_PROBE_SIZE,
                              device=p.device if p is not None else "cpu")
    count = 0
    for conv_name, bn_name in _conv_bn_pairs(folded, example):
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        if bn.running_var is None or bn.running_mean is None:
            continue
        weight, bias = fold_bn(conv.weight, conv.bias, bn)
        conv.weight, conv.bias = nn.Parameter(weight), nn.Parameter(bias)
        _set_submodule(folded, bn_name, nn.Identity())
        count += 1
    return folded, count
