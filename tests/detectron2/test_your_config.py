"""docs/your_config.md, Detectron2 section: every family's snippet, taken from the page as written, gives a config of
Detectron2's own Mask R-CNN R50-FPN 1x with our backbone that builds and predicts on a 64x64 image."""
import os
import sys

import pytest
import torch
from detectron2.modeling import build_model

from effvit_plugins.models.spec import families

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from configgen import your_config  # noqa: E402

with open(os.path.join(ROOT, your_config.PATH), encoding="utf-8") as f:
    CODES = your_config.snippets(f.read())["Detectron2: Mask R-CNN"]


@pytest.mark.parametrize("code", CODES, ids=[s.key for s in families()])
def test_snippet_builds_and_predicts(code):
    namespace = {}
    exec(compile(code, your_config.PATH, "exec"), namespace)  # the snippet, as a user runs it
    cfg = namespace["cfg"]
    spec = next(s for s in families() if cfg.MODEL.BACKBONE.NAME.startswith(f"build_{s.key}_"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert isinstance(model.backbone.bottom_up, spec.backbone)
    with torch.no_grad():
        (out,) = model([{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8).float(), "height": 64,
                         "width": 64}])
    assert out["instances"].pred_boxes.tensor.shape[-1] == 4 and out["instances"].has("pred_masks")
