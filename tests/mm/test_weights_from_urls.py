"""Weights from URLs in OpenMMLab: ``init_cfg=dict(type='Pretrained', checkpoint=URL)`` of our backbones and
``load_from=URL`` of a runner (mmengine's CheckpointLoader schemes, patched by ``import effvit_plugins``) load an
official-layout file from a loopback server, hash-checked and converted; a local official file takes the same path.
The base-config pitfall: weights that come from a ResNet base config are errors that say where they came from."""
import os

import pytest
import torch

import effvit_plugins  # noqa: F401  (registers the modules, patches mmengine's loaders)
from effvit_plugins.checkpoint import ForeignCheckpointError
from effvit_plugins.models.spec import families
from effvit_plugins.testing import build_mm_backbone, save_official_classifier, serve_directory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# a family whose official layout differs from ours (so loading proves the conversion)
SPEC = next(s for s in families() if s.classifier is not None and s.classifier.official_key_prefixes)
ARCH = SPEC.variants[0]


@pytest.fixture
def served(tmp_path, monkeypatch):
    """``(base URL, file name, classifier, local path)`` while a loopback server serves an official-layout file of
    SPEC's smallest classifier (named with its hash prefix); the torch hub cache is this test's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    d = tmp_path / "www"
    d.mkdir()
    name, classifier = save_official_classifier(str(d), SPEC)
    with serve_directory(d) as base:
        yield base, name, classifier, str(d / name)


def test_init_cfg_url_equals_the_local_file(served):
    base, name, classifier, local = served
    kw = dict(SPEC.cls_backbone_kwargs)  # the ImageNet backbone (MSRA: bias tables of 224x224)
    from_url = build_mm_backbone(SPEC, ARCH, init_cfg=dict(type="Pretrained", checkpoint=base + name), **kw)
    from_url.init_weights()
    from_file = build_mm_backbone(SPEC, ARCH, init_cfg=dict(type="Pretrained", checkpoint=local), **kw)
    from_file.init_weights()
    ours = {k[len("backbone."):]: v for k, v in classifier.state_dict().items() if k.startswith("backbone.")}
    for k, v in from_url.state_dict().items():
        assert torch.equal(v, from_file.state_dict()[k]), k
        assert torch.equal(v, ours[k]), k


@pytest.mark.parametrize("where", ["url", "local"])
def test_load_from_in_a_runner_converts_the_official_file(served, tmp_path, where):
    """mmengine's Runner (as tools/train.py and tools/test.py build it) with the smallest classifier config of the
    family and ``load_from`` an official ImageNet file: every tensor of the classifier is the file's."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    base, name, classifier, local = served
    cfg = Config.fromfile(os.path.join(ROOT, "configs", SPEC.config_folder,
                                       f"{SPEC.config_prefix}-{ARCH}_{SPEC.cls_batch}_in1k.py"))
    cfg.work_dir = str(tmp_path / "work")
    cfg.load_from = base + name if where == "url" else local
    cfg.experiment_name = f"load_from_{where}"
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()  # what runner.train() / runner.test() start with
    expected = classifier.state_dict()
    got = runner.model.state_dict()
    assert expected.keys() <= got.keys()
    for k, v in expected.items():
        assert torch.equal(got[k], v), k


def test_pretrained_copied_by_mmseg_names_its_origin():
    with pytest.raises(ForeignCheckpointError, match=r"'open-mmlab://resnet50_v1c' names a model of mmengine's "
                                                     r"model zoo.*nothing was downloaded.*`pretrained` argument: "
                                                     r"mmseg's EncoderDecoder copies.*model=dict\(pretrained=None"):
        build_mm_backbone(SPEC, ARCH, scope="mmseg", pretrained="open-mmlab://resnet50_v1c").init_weights()


def test_foreign_file_in_init_cfg_names_the_base_config(tmp_path):
    """A file of another architecture (ResNet-like keys) in init_cfg: the error says it may be inherited."""
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.ones(64)}},
               tmp_path / "resnet.pth")
    backbone = build_mm_backbone(SPEC, ARCH, init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "resnet.pth")))
    with pytest.raises(ForeignCheckpointError, match=r"fit none of the layouts.*another architecture.*inherited from "
                                                     r"the base config's backbone dict.*_delete_=True"):
        backbone.init_weights()


def test_load_from_converts_an_official_detector(ef_dense_roundtrip, tmp_path):
    """An official dense checkpoint (EfficientFormer L1 Mask R-CNN, mmdet 2.x layout: the one family whose official
    detectors need conversion) loads strictly through mmengine's load_checkpoint, what ``load_from`` runs."""
    from mmengine.runner import load_checkpoint

    from effvit_plugins.mm.tools_common import build_model_from_cfg, load_config

    cfg = load_config(os.path.join(ROOT, "configs", "efficientformer", "mask-rcnn_efficientformer-l1_fpn_8xb2-1x_coco.py"))
    src, _, _, _ = ef_dense_roundtrip(cfg, {"mmdet_version": "2.19.0"})
    model = build_model_from_cfg(cfg)
    load_checkpoint(model, str(tmp_path / "official.pth"), map_location="cpu", strict=True)
    theirs = src.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
