"""Weights for the Detectron2 models: an official-layout file of every family loads through MODEL.WEIGHTS into the
backbone (converted on load, nothing of the backbone missing but the layers the dense backbones add);
tools/convert_checkpoint.py --to detectron2 writes a file plain Detectron2 loads; training checkpoints are read with
weights_only=True and an allow-list, anything else refused."""
import argparse
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from effvit_plugins.checkpoint import CheckpointError
from effvit_plugins.convert import convert_official
from effvit_plugins.detectron2 import EffViTCheckpointer, add_effvit_config, load_d2_checkpoint
from effvit_plugins.models.spec import families, get_family

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the wrapper keys the official release files use (or none); each family's file gets one of them in turn, so every
# wrapper is tested
WRAPPERS = ("state_dict", "model", None)
CASES = [(spec.key, WRAPPERS[i % len(WRAPPERS)]) for i, spec in enumerate(families())]


def mask_rcnn_config(spec, arch):
    """The family's generated COCO Mask R-CNN config of ``arch``."""
    return f"mask_rcnn_{spec.d2_token}_{arch}_{'upfpn' if spec.upsample_neck else 'fpn'}_1x"


def official_file(family, arch, wrapper, path, randomized, official_classifier_layout):
    """An ImageNet classifier of the family saved in the official checkpoint layout (checked: the family's converter
    maps it back onto our classifier exactly)."""
    core = randomized(get_family(family).classifier(arch))
    ours = core.state_dict()
    official = official_classifier_layout(family, core)
    _, back = convert_official(dict(official), family)
    assert back.keys() == ours.keys()
    torch.save({wrapper: official} if wrapper else official, path)
    return {k[len("backbone."):]: v for k, v in ours.items() if k.startswith("backbone.")}


def model_of(name):
    cfg = add_effvit_config(get_cfg())
    cfg.merge_from_file(os.path.join(ROOT, "configs", "detectron2", "COCO-InstanceSegmentation", name + ".yaml"))
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


@pytest.mark.parametrize("family,wrapper", CASES, ids=[f for f, _ in CASES])
def test_official_file_loads_through_model_weights(family, wrapper, tmp_path, randomized, official_classifier_layout):
    spec = get_family(family)
    arch = spec.variants[0]  # the smallest
    name = mask_rcnn_config(spec, arch)
    path = str(tmp_path / f"official_{arch}.pth")
    expected = official_file(family, arch, wrapper, path, randomized, official_classifier_layout)
    model = model_of(name)
    backbone = model.backbone.bottom_up
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    EffViTCheckpointer(model).resume_or_load(path, resume=False)
    dense_only = spec.new_in_dense
    loaded, resized, kept = [], [], []
    for k, v in backbone.state_dict().items():
        if k in expected and expected[k].shape == v.shape:
            assert torch.equal(v, expected[k]), k
            loaded.append(k)
        elif k in expected and k.endswith("attention_biases"):  # ImageNet tables resized to the model's grid
            assert not torch.equal(v, before[k]), k
            resized.append(k)
        elif not k.endswith("attention_bias_idxs"):  # (derived index buffers)
            kept.append(k)
    print(f"{family}: {len(loaded)} tensors loaded, {len(resized)} bias tables resized, {len(kept)} kept")
    assert len(loaded) > 0.8 * len(expected)
    assert all(any(d in k for d in dense_only) for k in kept), [k for k in kept if not any(d in k for d in dense_only)]

def test_convert_checkpoint_to_detectron2(tmp_path, randomized, load_tool, official_classifier_layout):
    """--to detectron2: the backbone under Detectron2's names, loadable by Detectron2's own checkpointer (what
    LazyConfig's train.init_checkpoint uses) with every backbone tensor found."""
    path = str(tmp_path / "efficientvit_b0_r224.pt")
    expected = official_file("efficientvit_mit", "b0", "state_dict", path, randomized, official_classifier_layout)
    dst = str(tmp_path / "b0_d2.pth")
    assert load_tool("convert_checkpoint").main([path, dst, "--to", "detectron2"]) == 0
    data = torch.load(dst, weights_only=True)
    assert set(data["model"]) == {"backbone.bottom_up." + k for k in expected}
    model = model_of("mask_rcnn_efficientvit_mit_b0_fpn_1x")
    DetectionCheckpointer(model).load(dst)
    for k, v in model.backbone.bottom_up.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_training_checkpoint_round_trip_and_refusal(tmp_path):
    """A Detectron2 training checkpoint (model, optimiser, scheduler, iteration, numpy values) saves and loads with
    weights_only=True; a file that needs another global is refused and names it."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    ckpt = EffViTCheckpointer(model, str(tmp_path), optimizer=opt)
    import numpy as np
    ckpt.save("model_0001", iteration=1, extra=np.arange(3), scalar=np.float64(0.5))
    loaded = load_d2_checkpoint(str(tmp_path / "model_0001.pth"))
    assert loaded["iteration"] == 1 and loaded["scalar"] == 0.5 and list(loaded["extra"]) == [0, 1, 2]
    assert ckpt.resume_or_load(str(tmp_path / "model_0001.pth"), resume=True)["iteration"] == 1
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=1)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="argparse.Namespace"):
        load_d2_checkpoint(str(tmp_path / "bad.pth"))


def test_model_weights_url_loads_through_the_hub_cache(tmp_path, monkeypatch):
    """MODEL.WEIGHTS = a URL (a loopback server): downloaded into the torch hub cache (not iopath's), hash-checked,
    converted and loaded into the backbone."""
    from effvit_plugins.testing import save_official_classifier, serve_directory

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    spec = next(s for s in families() if s.classifier is not None and s.classifier.official_key_prefixes)
    arch = spec.variants[0]
    (tmp_path / "www").mkdir()
    name, classifier = save_official_classifier(str(tmp_path / "www"), spec, arch)
    expected = {k[len("backbone."):]: v for k, v in classifier.state_dict().items() if k.startswith("backbone.")}
    model = model_of(mask_rcnn_config(spec, arch))
    with serve_directory(tmp_path / "www") as base:
        EffViTCheckpointer(model).resume_or_load(base + name, resume=False)
    assert os.listdir(tmp_path / "torch" / "hub" / "checkpoints") == [name]
    loaded = [k for k, v in model.backbone.bottom_up.state_dict().items()
              if k in expected and v.shape == expected[k].shape and torch.equal(v, expected[k])]
    assert len(loaded) > 0.8 * len(expected)
