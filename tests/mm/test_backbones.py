"""OpenMMLab backbone adapters: strict pretrained loading, the one-line report of resized bias tables, the official
dense-prediction bias tables of EfficientFormer, explicit (importable) classes and ``with_cp``."""
import logging

import pytest
import torch

from mmengine.model import BaseModule

import effvit_plugins  # noqa: F401  (registers)
from effvit_plugins import testing
from effvit_plugins.checkpoint import CheckpointError
from effvit_plugins.mm import backbones
from effvit_plugins.models import efficientformer_v1, efficientformer_v2, efficientvit_msra
from effvit_plugins.models.spec import families, family_of


def build(typ, **kw):
    from mmengine.registry import DefaultScope
    from mmdet.registry import MODELS

    with DefaultScope.overwrite_default_scope("mmdet"):
        return MODELS.build(dict(type=typ, **kw))


@pytest.fixture
def core_log():
    """Records of the cores' logger ``effvit_plugins``."""
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    h = Collect(level=logging.INFO)
    logger = logging.getLogger("effvit_plugins")
    logger.addHandler(h)
    yield records
    logger.removeHandler(h)


@pytest.mark.parametrize("spec", families(), ids=lambda s: s.key)
def test_adapters_are_importable_classes(spec):
    """One class per family, made from its spec: an attribute of effvit_plugins.mm.backbones under the family's
    name, registered there, pickled by name, documented with the core's and the OpenMMLab arguments."""
    import pickle

    from mmseg.registry import MODELS as SEG
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as PRETRAIN

    cls = getattr(backbones, spec.name)
    assert cls.__module__ == "effvit_plugins.mm.backbones" and cls.__qualname__ == spec.name
    assert cls.__bases__ == (backbones.PretrainedInitMixin, spec.backbone, BaseModule)
    assert DET.get(spec.name) is cls and SEG.get(spec.name) is cls and PRETRAIN.get(spec.name) is cls
    assert cls.__doc__.startswith(spec.backbone.__doc__) and "init_cfg" in cls.__doc__
    clone = pickle.loads(pickle.dumps(build(spec.name, arch=spec.variants[0])))
    assert type(clone) is cls and family_of(clone) is spec


@pytest.mark.parametrize("spec", families(), ids=lambda s: s.key)
def test_with_cp_in_the_backbone_dict(spec):
    """``with_cp=True`` in a config's backbone dict (our scope's name, from mmdet / mmseg / mmpretrain) switches
    gradient checkpointing on: the last block runs again in the backward pass; default off."""
    import importlib

    from mmengine.registry import DefaultScope

    x = torch.randn(1, 3, 64, 64)
    for lib in ("mmdet", "mmseg", "mmpretrain"):
        with DefaultScope.overwrite_default_scope(lib):
            m = importlib.import_module(f"{lib}.registry").MODELS.build(
                dict(type=f"effvit_plugins.{spec.name}", arch=spec.variants[0], with_cp=True))
        assert type(m) is getattr(backbones, spec.name) and m.with_cp and m.grad_checkpointing, lib
    for with_cp, expected in ((True, 2), (False, 1)):
        m = build(spec.name, arch=spec.variants[0], with_cp=with_cp, norm_eval=True).train()
        with testing.count_recomputation(m) as calls:
            sum(o.sum() for o in m(x)).backward()
        assert len(calls) == expected and m.with_cp == with_cp
    assert not build(spec.name, arch=spec.variants[0]).with_cp


def _save(sd, path):
    torch.save({"state_dict": sd}, path)
    return str(path)


def test_partly_matching_pretrained_file_is_an_error(tmp_path):
    torch.manual_seed(0)
    ref = efficientvit_msra.EfficientViTMSRABackbone("m0")
    full = ref.state_dict()
    missing = {k: v for k, v in full.items() if not k.startswith("blocks3.")}
    extra = dict(full, **{"blocks9.0.weight": torch.zeros(3)})
    for path, msg in ((_save(missing, tmp_path / "missing.pth"), r"only partly matches.*missing from the file"),
                      (_save(extra, tmp_path / "extra.pth"), r"1 file tensors have no place in the model")):
        bb = build("EfficientViTMSRA", arch="m0", init_cfg=dict(type="Pretrained", checkpoint=path))
        before = {k: v.clone() for k, v in bb.state_dict().items()}
        with pytest.raises(CheckpointError, match=msg):
            bb.init_weights()
        assert all(torch.equal(v, before[k]) for k, v in bb.state_dict().items()), "half-loaded"
    ok = build("EfficientViTMSRA", arch="m0", init_cfg=dict(type="Pretrained",
                                                           checkpoint=_save(full, tmp_path / "ok.pth")))
    ok.init_weights()
    assert all(torch.equal(v, full[k]) for k, v in ok.state_dict().items())


def test_msra_imagenet_tables_resized_with_one_log_line(tmp_path, core_log):
    cls = efficientvit_msra.EfficientViTMSRAClassifier("m0")  # ImageNet model: stage-3 tables for a 4x4 window
    official = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in cls.state_dict().items()}
    bb = build("EfficientViTMSRA", arch="m0",
               init_cfg=dict(type="Pretrained", checkpoint=_save(official, tmp_path / "efficientvit_m0.pth")))
    bb.init_weights()
    resized = [r for r in core_log if "resized attention-bias tables" in r]
    assert len(resized) == 1, core_log
    assert "3 from 4x4 to 7x7 offsets" in resized[0] and "blocks3.3.mixer.m.attn.attention_biases" in resized[0]
    assert bb.blocks3[3].mixer.m.attn.attention_biases.shape == (4, 49)


@pytest.mark.parametrize("typ,arch,det_res,seg_res", [("EfficientFormerV1", "l1", 25, 16),
                                                      ("EfficientFormerV2", "s0", 800, 512)])
def test_efficientformer_dense_tables(tmp_path, core_log, typ, arch, det_res, seg_res):
    """ImageNet file -> dense backbone: the _seg tables keep their (zero) initialisation, the ImageNet tables are
    ignored, as in the official dense code. Official dense checkpoint (dummy ImageNet buffers, _seg tables and
    index buffers, backbone. prefix) -> 0 missing / 0 unexpected; into another seg_resolution -> resized, one
    log line."""
    mod = efficientformer_v1 if typ.endswith("V1") else efficientformer_v2
    torch.manual_seed(0)
    cls = (mod.EfficientFormerV1Classifier if mod is efficientformer_v1 else mod.EfficientFormerV2Classifier)(arch)
    imagenet = {(k[len("backbone."):] if k.startswith("backbone.") else k[len("head."):]): v
                for k, v in cls.state_dict().items()}
    bb = build(typ, arch=arch, seg_resolution=det_res,
               init_cfg=dict(type="Pretrained", checkpoint=_save(imagenet, tmp_path / "imagenet.pth")))
    bb.init_weights()
    seg_tables = {k: v for k, v in bb.state_dict().items() if k.endswith("attention_biases_seg")}
    assert seg_tables and all(torch.count_nonzero(v) == 0 for v in seg_tables.values())
    assert not any(k.endswith(".attention_biases") for k in bb.state_dict())

    # the official dense checkpoint layout, as the official mmdet 2.x / mmseg 0.x training saves it
    with torch.no_grad():
        for p in seg_tables:
            bb.get_parameter(p).normal_()
    official = {}
    for k, v in bb.state_dict().items():
        official["backbone." + k] = v
        if k.endswith("attention_biases_seg"):
            m = bb.get_submodule(k.rsplit(".", 1)[0])
            official["backbone." + k.replace("biases_seg", "bias_idxs_seg")] = m.bias_index.clone()
            official["backbone." + k.replace("_seg", "")] = torch.zeros(v.shape[0], 49)  # unused dummies
            official["backbone." + k.replace("biases_seg", "bias_idxs")] = torch.ones(49, 49, dtype=torch.long)
    official["neck.lateral_convs.0.conv.weight"] = torch.zeros(256, bb.out_channels[0], 1, 1)
    path = str(tmp_path / "mask_rcnn_official.pth")
    torch.save({"state_dict": official, "meta": {"epoch": 12}}, path)
    converted = mod.convert_official_checkpoint(official)
    res = bb.load_state_dict({k[len("backbone."):]: v for k, v in converted.items() if k.startswith("backbone.")},
                             strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    same = build(typ, arch=arch, seg_resolution=det_res,
                 init_cfg=dict(type="Pretrained", checkpoint=path, prefix="backbone."))
    same.init_weights()
    for k, v in seg_tables.items():
        assert torch.equal(same.state_dict()[k], bb.state_dict()[k])
    core_log.clear()
    other = build(typ, arch=arch, seg_resolution=seg_res,
                  init_cfg=dict(type="Pretrained", checkpoint=path, prefix="backbone."))
    other.init_weights()
    lines = [r for r in core_log if "resized attention-bias tables" in r]
    assert len(lines) == 1 and "attention_biases_seg" in lines[0], core_log
    # a dense checkpoint into a backbone without dense tables: clear advice
    plain = build(typ, arch=arch, init_cfg=dict(type="Pretrained", checkpoint=path, prefix="backbone."))
    with pytest.raises(CheckpointError, match="seg_resolution="):
        plain.init_weights()
