"""docs/your_config.md ("your existing config + our backbone"): the committed page is what the generator writes, it has
a snippet per family for each upstream base, and every OpenMMLab snippet, taken from the page as written, builds with
the upstream base config (mmdet's Mask R-CNN, mmseg's Semantic FPN and UPerNet), initialises and predicts on a 64x64
image. The base-config pitfall on the same snippets: without ``model.pretrained=None`` (mmseg) or ``_delete_=True``
(mmdet) the error says where the ResNet weights / arguments came from."""
import os
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from effvit_plugins.checkpoint import ForeignCheckpointError
from effvit_plugins.models.spec import families

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from configgen import your_config  # noqa: E402

with open(os.path.join(ROOT, your_config.PATH), encoding="utf-8") as f:
    DOC = f.read()
SNIPPETS = your_config.snippets(DOC)
OPENMMLAB = [(title, code) for title, base, _, _ in your_config.SECTIONS if "::" in base  # mmdet::, mmseg::
             for code in SNIPPETS.get(title, [])]
SIZE = 64


def test_doc_is_generated_and_covers_every_family():
    assert DOC == your_config.render(), f"{your_config.PATH} is stale: run python scripts/gen_configs.py"
    for title, _, _, _ in your_config.SECTIONS:
        codes = SNIPPETS[title]
        assert len(codes) == len(families()), title
        for spec, code in zip(families(), codes):
            assert f"'{spec.name}'" in code or f"'build_{spec.key}_" in code, (title, spec.key)
            assert f"'{spec.variants[0]}'" in code, (title, spec.key)
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert "docs/your_config.md" in readme


def build(code: str, tmp_path):
    """The config of ``code`` (saved as a file, as a user does), its scope and the built model (small test sizes)."""
    path = tmp_path / "my_config.py"
    path.write_text(code)
    cfg = Config.fromfile(str(path))
    scope = cfg.default_scope
    if scope == "mmseg":
        cfg.model.data_preprocessor.size = (SIZE, SIZE)  # (the base pads to its 512x512 crop)
    else:  # few proposals / detections: an untrained detector scores everything alike
        cfg.model.test_cfg.rpn.update(nms_pre=100, max_per_img=20)
        cfg.model.test_cfg.rcnn.update(max_per_img=10)
    with DefaultScope.overwrite_default_scope(scope):
        from mmengine.registry import MODELS

        torch.manual_seed(0)
        return cfg, scope, MODELS.build(cfg.model)


def inputs(scope):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    if scope == "mmdet":
        from mmdet.testing import demo_mm_inputs

        data = demo_mm_inputs(batch_size=1, image_shapes=[(3, SIZE, SIZE)], num_items=[1], with_mask=True)
        data["inputs"] = [image]
        return data
    from mmseg.structures import SegDataSample

    meta = dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE))
    return dict(inputs=[image], data_samples=[SegDataSample(metainfo=meta)])


@pytest.mark.parametrize("title,code", OPENMMLAB, ids=[f"{t.split(': ')[1]}-{families()[i % len(families())].key}"
                                                       for i, (t, _) in enumerate(OPENMMLAB)])  # (family order)
def test_snippet_builds_and_predicts(title, code, tmp_path):
    cfg, scope, model = build(code, tmp_path)
    spec = next(s for s in families() if s.name == cfg.model.backbone.type)
    assert type(model.backbone).__name__ == spec.name
    model.init_weights()  # (mmseg: runs only because of model.pretrained=None)
    model.eval()
    with torch.no_grad():
        preds = model.test_step(inputs(scope))
    if scope == "mmdet":
        assert preds[0].pred_instances.bboxes.shape[-1] == 4 and "masks" in preds[0].pred_instances
    else:
        assert tuple(preds[0].pred_sem_seg.data.shape[-2:]) == (SIZE, SIZE)


def test_without_pretrained_none_mmseg_names_the_origin(tmp_path):
    code = SNIPPETS["mmseg: Semantic FPN"][0]
    assert your_config.PRETRAINED_NONE + "\n" in code
    _, _, model = build(code.replace(your_config.PRETRAINED_NONE + "\n", ""), tmp_path)
    assert model.backbone.init_cfg == dict(type="Pretrained", checkpoint="open-mmlab://resnet50_v1c")
    with pytest.raises(ForeignCheckpointError, match=r"'open-mmlab://resnet50_v1c'.*nothing was downloaded.*mmseg's "
                                                     r"EncoderDecoder copies the segmentor's model.pretrained.*"
                                                     r"model=dict\(pretrained=None"):
        model.init_weights()


def test_without_delete_mmdet_names_the_inherited_arguments_and_weights(tmp_path):
    code = SNIPPETS["mmdet: Mask R-CNN"][0]
    assert "backbone=dict(_delete_=True, " in code
    with pytest.raises(TypeError, match=r"got arguments it does not take: depth, num_stages.*base config's backbone "
                                        r"dict.*init_cfg \(checkpoint='torchvision://resnet50'\) most likely came the "
                                        r"same way.*_delete_=True"):
        build(code.replace("backbone=dict(_delete_=True, ", "backbone=dict("), tmp_path)
