"""The backbone contract shared by every family (framework-free).

:class:`BackboneBase` implements, once, what users of mmdet / mmseg / mmpretrain / timm / Detectron2 backbones
expect, so that a family only describes its layers:

* ``out_indices`` -- which feature maps ``forward`` returns (a tuple of NCHW tensors, in that order);
* ``frozen_stages`` -- mmdet/mmpretrain meaning: ``-1`` nothing, ``0`` the stem, ``k`` the stem plus the first
  ``k`` stages (eval mode and ``requires_grad=False``, re-applied by every ``train()``);
* ``norm_eval`` -- every BatchNorm stays in eval mode while training;
* ``feature_info`` -- timm-style description of every feature map (``num_chs``, ``reduction``, ``module``);
* ``with_cp`` -- gradient checkpointing (the OpenMMLab name): the same switch as timm's
  ``set_grad_checkpointing`` (``with_cp=True`` at construction == ``set_grad_checkpointing(True)`` afterwards);
* ``forward_intermediates`` and ``set_grad_checkpointing`` (timm's API);
* an empty batch (N = 0, which mmdet can produce) returns empty maps of the right shape.

A family implements:

* ``stem_modules()`` -- the modules before the first stage (may be empty);
* ``stage_modules()`` -- one entry per stage (the unit ``frozen_stages`` counts);
* ``feature_steps()`` -- one list of callables per feature map: running the lists in order from the input
  produces feature ``0, 1, ...`` (each callable one checkpointing unit);
* optionally ``prepare_input(x)`` and ``finish_feature(i, x, in_shape)`` hooks;
* for TorchScript (``torch.jit.script``, Detectron2's ``--export-method scripting``): ``script_maps(x)`` -- the same
  feature maps written out with the family's modules (iterated, not indexed by a variable), the list of every map;
  the scripted ``forward`` returns the ``out_indices`` ones as a list.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from .layers import use_channels_last


def resolve_arch(arch, arch_settings: Mapping[str, dict], family: str, optional: Iterable[str] = ()) -> dict:
    """Return a copy of the settings for ``arch`` (case-insensitive variant name or an explicit dict).

    A dict must have every key the table's entries have (except those in ``optional``) and no other key.

    Raises:
        ValueError: missing/unknown variant name (the message lists the valid ones) or a dict with missing or
            unknown keys (the message lists them and the expected ones).
    """
    names = ", ".join(arch_settings)
    if arch is None:
        raise ValueError(f"{family}: `arch` is required. Valid variants: {names} (or a dict of settings).")
    if isinstance(arch, Mapping):
        required = set.intersection(*(set(v) for v in arch_settings.values())) - set(optional)
        allowed = set.union(*(set(v) for v in arch_settings.values())) | set(optional)
        missing, unknown = sorted(required - set(arch)), sorted(set(arch) - allowed)
        if missing or unknown:
            problems = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
            raise ValueError(
                f"{family}: the arch dict has {' and '.join(problems)} keys. A custom arch needs the keys "
                f"{sorted(required)}" + (f" (optional: {sorted(allowed - required)})" if allowed - required else "")
                + f", like the entries of the variant table ({names}).")
        return dict(arch)
    key = str(arch).lower().replace("-", "").replace("_", "")
    table = {k.lower().replace("-", "").replace("_", ""): k for k in arch_settings}
    if key not in table:
        raise ValueError(
            f"Unknown {family} variant {arch!r}. Valid variants: {names}. "
            f"Pass one of these names as `arch` (or a dict with the same keys as an entry of the table).")
    return dict(arch_settings[table[key]])


def normalize_out_indices(out_indices, num_stages: int, family: str) -> tuple:
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    out = []
    for i in out_indices:
        j = i + num_stages if i < 0 else i
        if not 0 <= j < num_stages:
            raise ValueError(
                f"{family}: out_indices entry {i} is out of range; this backbone has {num_stages} feature maps "
                f"(valid indices 0..{num_stages - 1}, or negative from the end).")
        out.append(j)
    if not out:
        raise ValueError(f"{family}: out_indices is empty; give at least one of 0..{num_stages - 1}.")
    if len(set(out)) != len(out):
        raise ValueError(f"{family}: out_indices {tuple(out_indices)} names a feature map twice.")
    return tuple(out)


def check_in_channels(x, expected: int, family: str) -> None:
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != expected:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(
            f"{family} expects an input of shape (N, {expected}, H, W) but got {shape}. "
            f"Set `in_channels={x.shape[1] if torch.is_tensor(x) and x.dim() == 4 else '?'}` when building the "
            f"backbone, or feed {expected}-channel images.")


class BackboneBase(nn.Module):
    """Shared behaviour of every backbone core; see the module docstring for what a family provides."""

    # (class attributes without annotations: TorchScript cannot read postponed annotations of class attributes)
    FAMILY = "backbone"
    frozen_stages = -1
    norm_eval = False
    grad_checkpointing = False
    channels_last = False  # Optional[bool]; None: channels-last on the CPU (see layers.use_channels_last)
    # properties TorchScript must not compile (descriptions of the model, not used by forward)
    __jit_unused_properties__ = ["stage_channels", "stage_strides", "out_channels", "out_strides", "with_cp"]

    # ------------------------------------------------------------------------------------------------------
    # to be provided by each family
    # ------------------------------------------------------------------------------------------------------
    def stem_modules(self) -> List[nn.Module]:
        return []

    def stage_modules(self) -> List[nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

    def feature_steps(self) -> List[List[Callable]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if use_channels_last(self.channels_last, x):
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def finish_feature(self, index: int, x: torch.Tensor, in_shape) -> torch.Tensor:
        """The map of feature ``index`` from the step's result (e.g. tokens back to NCHW); ``in_shape`` is the
        shape of the step's input."""
        return x

    def output_feature(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """What ``forward`` returns for feature ``index`` (e.g. with an output norm); the stream goes on with
        ``x``."""
        return x

    # ------------------------------------------------------------------------------------------------------
    # set-up, called by the family's __init__ once its layers exist
    # ------------------------------------------------------------------------------------------------------
    def init_contract(self, channels: Sequence[int], strides: Sequence[int], modules: Sequence[str],
                      in_channels: int, out_indices, frozen_stages: int, norm_eval: bool,
                      with_cp: bool = False) -> None:
        """Validate the common options and build ``feature_info`` (``modules`` names the module producing each
        feature map, for documentation and timm-style feature extraction). ``with_cp`` (the family's constructor
        argument, default False) switches gradient checkpointing on (:meth:`set_grad_checkpointing`)."""
        self.in_channels = int(in_channels)
        self.feature_info = [dict(num_chs=int(c), reduction=int(s), module=m, index=i)
                             for i, (c, s, m) in enumerate(zip(channels, strides, modules))]
        self.num_stages = len(self.feature_info)
        self.out_indices = normalize_out_indices(out_indices, self.num_stages, self.FAMILY)
        n_freeze = len(self.stage_modules())
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= n_freeze:
            raise ValueError(
                f"{self.FAMILY}: frozen_stages must be an int in [-1, {n_freeze}] (-1: nothing, 0: the stem, k: the "
                f"stem and the first k stages), got {frozen_stages!r}.")
        self.frozen_stages = frozen_stages
        self.norm_eval = bool(norm_eval)
        self.set_grad_checkpointing(with_cp)
        self._freeze_stages()

    @property
    def stage_channels(self) -> List[int]:
        return [f["num_chs"] for f in self.feature_info]

    @property
    def stage_strides(self) -> List[int]:
        return [f["reduction"] for f in self.feature_info]

    @property
    def out_channels(self) -> List[int]:
        return [self.feature_info[i]["num_chs"] for i in self.out_indices]

    @property
    def out_strides(self) -> List[int]:
        return [self.feature_info[i]["reduction"] for i in self.out_indices]

    # ------------------------------------------------------------------------------------------------------
    # frozen_stages / norm_eval
    # ------------------------------------------------------------------------------------------------------
    def frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return list(self.stem_modules()) + list(self.stage_modules()[: self.frozen_stages])

    def _freeze_stages(self) -> None:
        for m in self.frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (timm's API): much
        less memory for large inputs (e.g. 1024x2048), about one extra forward of compute. Only active while
        training with autograd. The constructor's ``with_cp=True`` (OpenMMLab's name) sets the same switch."""
        self.grad_checkpointing = bool(enable)

    @property
    def with_cp(self) -> bool:
        """Whether gradient checkpointing is on (OpenMMLab's name for :attr:`grad_checkpointing`; assigning it is
        :meth:`set_grad_checkpointing`)."""
        return self.grad_checkpointing

    @with_cp.setter
    def with_cp(self, enable: bool) -> None:
        self.set_grad_checkpointing(enable)

    def _run(self, fn: Callable, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, x, use_reentrant=False)
        return fn(x)

    def feature_shape(self, index: int, height: int, width: int) -> Tuple[int, int, int]:
        """(C, H, W) of feature ``index`` for an input of ``height x width`` (every layer rounds up)."""
        f = self.feature_info[index]
        return f["num_chs"], math.ceil(height / f["reduction"]), math.ceil(width / f["reduction"])

    def _empty_features(self, x: torch.Tensor, indices: Sequence[int]) -> List[torch.Tensor]:
        h, w = x.shape[-2:]
        return [x.new_zeros((0,) + self.feature_shape(i, h, w)) for i in indices]

    def _features(self, x: torch.Tensor, indices: Sequence[int], stop_early: bool = True
                  ) -> Tuple[Dict[int, torch.Tensor], torch.Tensor]:
        """Run the network; returns ``({index: output map}, last map)``."""
        check_in_channels(x, self.in_channels, self.FAMILY)
        wanted = set(indices)
        steps = self.feature_steps()
        last = max(wanted) if stop_early else len(steps) - 1
        x = self.prepare_input(x)
        outs: Dict[int, torch.Tensor] = {}
        for i, step in enumerate(steps[: last + 1]):
            in_shape = x.shape
            for fn in step:
                x = self._run(fn, x)
            x = self.finish_feature(i, x, in_shape)
            if i in wanted:
                outs[i] = self.output_feature(i, x)
        return outs, x

    def forward(self, x: torch.Tensor):
        if torch.jit.is_scripting():
            return self.select_outputs(self.script_maps(x))
        return self._forward(x)

    @torch.jit.unused  # (TorchScript compiles script_maps instead: the step runner calls Python callables)
    def _forward(self, x: torch.Tensor) -> List[torch.Tensor]:  # (a tuple; the annotation is for TorchScript)
        if torch.is_tensor(x) and x.dim() == 4 and x.shape[0] == 0:
            check_in_channels(x, self.in_channels, self.FAMILY)
            return tuple(self._empty_features(x, self.out_indices))
        outs, _ = self._features(x, self.out_indices)
        return tuple(outs[i].contiguous() for i in self.out_indices)

    def script_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Every feature map (0, 1, ...) of ``x``, written out with the family's modules: what ``forward`` runs when
        compiled by TorchScript (``torch.jit.script``), where it returns the maps of ``out_indices`` as a list. Each
        family implements it with the layers of its :meth:`feature_steps`; same results as the eager forward up to
        float rounding (eager inference folds BatchNorms into convolutions)."""
        raise NotImplementedError(f"{self.FAMILY}: script_maps is not implemented; this backbone cannot be scripted.")

    def select_outputs(self, maps: List[torch.Tensor]) -> List[torch.Tensor]:
        """The maps of ``out_indices``, in that order (contiguous)."""
        return [maps[i].contiguous() for i in self.out_indices]

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, Sequence[int]]] = None,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's API: the feature maps ``indices`` (a list of indices, or an int ``n`` = the last ``n``; default
        all) as a list of NCHW tensors, and unless ``intermediates_only`` also the final map: the last stage's
        output without output norms (with ``stop_early``, the network stops after the last requested map and
        the final map is that stage's output)."""
        if output_fmt != "NCHW":
            raise ValueError(f"{self.FAMILY}: output_fmt must be 'NCHW' (got {output_fmt!r}).")
        if indices is None:
            idx = list(range(self.num_stages))
        elif isinstance(indices, int):
            if not 0 < indices <= self.num_stages:
                raise ValueError(f"{self.FAMILY}: indices={indices}: the last n maps need 1 <= n <= {self.num_stages}.")
            idx = list(range(self.num_stages - indices, self.num_stages))
        else:
            idx = list(normalize_out_indices(indices, self.num_stages, self.FAMILY))
        if x.shape[0] == 0:
            inter = self._empty_features(x, idx)
            final = self._empty_features(x, [self.num_stages - 1])[0]
        else:
            outs, final = self._features(x, idx, stop_early=stop_early)
            inter = [outs[i].contiguous() for i in idx]
        if intermediates_only:
            return inter
        return final.contiguous(), inter
