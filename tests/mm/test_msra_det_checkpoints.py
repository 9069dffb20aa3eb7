"""Checkpoints in the layout of the official EfficientViT-MSRA M4 COCO detectors (microsoft/Cream
EfficientViT/downstream, mmdet 2.x: ``backbone.`` / ``neck.`` / head prefixes) load into our RetinaNet and
Mask R-CNN configs with 0 missing / 0 unexpected keys: as ``load_from``, through ``tools/test.py`` and as the
backbone's ``init_cfg`` (``prefix='backbone.'``).

The files are built independently of our modules: the backbone keys and shapes from timm's EfficientViT-M4
renamed to the official names (the timm <-> official correspondence), with the 7x7-window bias tables of the
downstream model; the neck and head keys written out from the official EfficientViTFPN / mmdet 2.x heads.
"""
import itertools
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import effvit_plugins  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    "retinanet": osp.join(ROOT, "configs", "efficientvit_msra", "retinanet_efficientvit-msra-m4_upfpn_8xb2-1x_coco.py"),
    "mask-rcnn": osp.join(ROOT, "configs", "efficientvit_msra", "mask-rcnn_efficientvit-msra-m4_upfpn_8xb2-1x_coco.py"),
}


def official_bias_idxs(resolution=7):
    """LeViT-style index of the official CascadedGroupAttention (offsets numbered in first-seen order)."""
    points = list(itertools.product(range(resolution), range(resolution)))
    offsets, idxs = {}, []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(off, len(offsets)))
    return torch.tensor(idxs).view(len(points), len(points))


def official_backbone_from_timm():
    """Official downstream EfficientViT-M4 backbone keys (patch_embed.*, blocks1-3.*, c/bn, 7x7 bias tables)."""
    import timm

    tm = timm.create_model("efficientvit_m4", pretrained=False)
    g = torch.Generator().manual_seed(0)
    out = {}
    for k, v in tm.state_dict().items():
        if k.startswith("head."):
            continue
        m = re.match(r"patch_embed\.conv(\d)\.(.*)", k)
        if m:
            k = f"patch_embed.{2 * (int(m[1]) - 1)}.{m[2]}"
        m = re.match(r"stages\.(\d)\.(downsample\.(res1|patchmerge|res2)|blocks\.(\d+))\.(.*)", k)
        if m:
            stage = int(m[1]) + 1
            idx = {"res1": 0, "patchmerge": 1, "res2": 2}[m[3]] if m[3] else int(m[4]) + (3 if stage > 1 else 0)
            k = f"blocks{stage}.{idx}.{m[5]}"
        k = k.replace(".conv.", ".c.")
        if k.endswith("attention_biases"):  # the downstream model uses 7x7 windows everywhere
            v = torch.randn(v.shape[0], 49, generator=g)
            out[k[:-len("attention_biases")] + "attention_bias_idxs"] = official_bias_idxs(7)
        elif v.is_floating_point():
            v = torch.randn(v.shape, generator=g) * 0.02
        out[k] = v
    return out


def official_neck_and_heads(detector):
    """``name -> shape`` of the official EfficientViTFPN (ConvModule: ``.conv``) and the mmdet 2.x heads."""
    shapes = {}

    def conv(name, cout, cin, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    for i, c in enumerate((128, 256, 384)):
        conv(f"neck.lateral_convs.{i}.conv", 256, c, 1)
        conv(f"neck.fpn_convs.{i}.conv", 256, 256, 3)
    n_trans = 1 if detector == "retinanet" else 2
    for i in range(n_trans):
        conv(f"neck.extra_trans_convs.{i}.conv", 256, 256, 2)  # ConvTranspose2d(256, 256): (in, out, 2, 2)
        conv(f"neck.extra_fpn_convs.{i}.conv", 256, 256, 3)
    if detector == "retinanet":
        conv("neck.fpn_convs.3.conv", 256, 384, 3)  # 'on_input' from the stride-64 map
        for i in range(4):
            conv(f"bbox_head.cls_convs.{i}.conv", 256, 256, 3)
            conv(f"bbox_head.reg_convs.{i}.conv", 256, 256, 3)
        conv("bbox_head.retina_cls", 9 * 80, 256, 3)
        conv("bbox_head.retina_reg", 9 * 4, 256, 3)
    else:
        conv("rpn_head.rpn_conv", 256, 256, 3)
        conv("rpn_head.rpn_cls", 3, 256, 1)
        conv("rpn_head.rpn_reg", 12, 256, 1)
        for name, (cout, cin) in {"shared_fcs.0": (1024, 256 * 49), "shared_fcs.1": (1024, 1024),
                                  "fc_cls": (81, 1024), "fc_reg": (320, 1024)}.items():
            shapes[f"roi_head.bbox_head.{name}.weight"], shapes[f"roi_head.bbox_head.{name}.bias"] = (cout, cin), (cout,)
        for i in range(4):
            conv(f"roi_head.mask_head.convs.{i}.conv", 256, 256, 3)
        conv("roi_head.mask_head.upsample", 256, 256, 2)
        conv("roi_head.mask_head.conv_logits", 80, 256, 1)
    return shapes


def official_checkpoint(detector, path):
    g = torch.Generator().manual_seed(1)
    sd = {f"backbone.{k}": v for k, v in official_backbone_from_timm().items()}
    sd.update({k: torch.randn(s, generator=g) * 0.02 for k, s in official_neck_and_heads(detector).items()})
    torch.save(dict(meta=dict(mmdet_version="2.28.2", epoch=12, iter=87960), state_dict=sd), path)
    return sd


def build(config, **cfg_options):
    from mmdet.registry import MODELS

    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options)
    with DefaultScope.overwrite_default_scope("mmdet"):
        return MODELS.build(cfg.model)


@pytest.fixture(scope="module", params=["retinanet", "mask-rcnn"])
def ckpt(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / f"{request.param}_efficientvit_m4_fpn_1x_coco.pth"
    return request.param, str(path), official_checkpoint(request.param, str(path))


def test_load_from_exact(ckpt):
    """What ``load_from`` does (mmengine's checkpoint loader, torch.load weights_only=True): every key matches."""
    from mmengine.runner.checkpoint import _load_checkpoint

    detector, path, sd = ckpt
    model = build(CONFIGS[detector])
    state = _load_checkpoint(path, map_location="cpu")["state_dict"]
    res = model.load_state_dict(state, strict=False)
    assert res.missing_keys == [] and res.unexpected_keys == []
    own = model.state_dict()
    assert set(own) == set(sd)
    for k in ("neck.extra_trans_convs.0.conv.weight", "neck.lateral_convs.2.conv.weight",
              "backbone.blocks3.3.mixer.m.attn.attention_biases", "backbone.patch_embed.6.c.weight"):
        assert torch.equal(own[k], sd[k]), k


def test_backbone_init_cfg_prefix(ckpt):
    detector, path, sd = ckpt
    # as the config header says: --cfg-options model.backbone.init_cfg.type=Pretrained ...checkpoint=...
    model = build(CONFIGS[detector], **{"model.backbone.init_cfg.type": "Pretrained",
                                        "model.backbone.init_cfg.checkpoint": path,
                                        "model.backbone.init_cfg.prefix": "backbone."})
    model.init_weights()
    bsd = model.backbone.state_dict()
    assert all(torch.equal(bsd[k[len("backbone."):]], v) for k, v in sd.items() if k.startswith("backbone."))
    assert len(bsd) == sum(k.startswith("backbone.") for k in sd)


def test_tools_test_reads_official_checkpoint(ckpt, tmp_path):
    """tools/test.py with the official file: loads without a key mismatch warning and evaluates (bbox mAP line)."""
    from effvit_plugins.datasets import generate_coco_demo

    detector, path, _ = ckpt
    data = str(tmp_path / "coco") + "/"
    generate_coco_demo(data, num_train=1, num_val=1, log=lambda *a: None)
    opts = [f"test_dataloader.dataset.data_root={data}", f"test_evaluator.ann_file={data}annotations/"
            "instances_val2017.json", "test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False"]
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, osp.join(ROOT, "tools", "test.py"), CONFIGS[detector], path,
                        "--work-dir", str(tmp_path / "work"), "--cfg-options", *opts], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "Load checkpoint from" in out
    assert "do not match exactly" not in out and "missing keys" not in out and "unexpected key" not in out
    assert re.search(r"^bbox mAP: \d\.\d{3}", r.stdout, re.M), r.stdout[-2000:]
