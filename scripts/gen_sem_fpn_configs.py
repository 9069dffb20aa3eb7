"""Write the Semantic FPN configs (ADE20K 512x512 and Cityscapes) of EfficientFormer V1/V2, EdgeViT and
EfficientViT-MSRA (run once; the configs are committed).

Variants come from each family's ARCH_SETTINGS; the channels of the maps fed to the neck are read from the
backbone itself (built on the meta device through the mmseg registry), not retyped here.
"""
import functools
import os
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# EfficientFormer's official dense backbones build "_seg" attention-bias tables for the segmentation resolution:
# V1 the side of the stride-32 token grid, V2 the input size in pixels (segmentation/backbone*.py there).
SEG_RESOLUTION = {"EfficientFormerV1": 16, "EfficientFormerV2": 512}
# other arguments of the official dense backbones (segmentation/backbone.py: efficientformer_l7_feat)
BACKBONE_EXTRA = {("EfficientFormerV1", "l7"): dict(layer_scale_init_value=1e-6)}
NONE_PUBLISHED = {
    "EfficientFormerV1": "none published in the official repo README (snap-research/EfficientFormer "
                         "segmentation/README.md has no result table)",
    "EfficientFormerV2": "none published in the official repo README (snap-research/EfficientFormer "
                         "segmentation/README.md has no result table)",
    "EdgeViT": "none published (saic-fi/edgevit has no segmentation code or results)",
    "EfficientViTMSRA": "none published (microsoft/Cream EfficientViT has detection results only)",
}
OFFICIAL = "snap-research/EfficientFormer segmentation/configs/sem_fpn"
SCHEDULE = ("AdamW lr 2e-4, weight decay 1e-4, poly decay (power 0.9, min lr {poly_min}), 40k iterations, "
            "Semantic FPN as mmseg's fpn_r50")
DATASETS = {
    "ade20k": dict(name="8xb4-40k_ade20k-512x512", title="ADE20K 512x512",
                   data="8 GPUs x 4 images, 512x512 crops; test at short side 512, sides resized to multiples of 32"),
    "cityscapes": dict(name="8xb2-40k_cityscapes-512x1024",
                       title="Cityscapes, evaluated on the full 1024x2048 images",
                       data="mmseg's Cityscapes Semantic FPN data setting (fpn_r50_4xb2-80k_cityscapes-512x1024: "
                            "512x1024 crops, full-size test) at 8 GPUs x 2 images, scaled as EfficientFormer scaled "
                            "the ADE20K recipe (twice the GPUs, half the iterations)"),
}
PRETTY = {"efficientformer": "EfficientFormer", "efficientformerv2": "EfficientFormerV2", "edgevit": "EdgeViT",
          "efficientvit-msra": "EfficientViT-MSRA"}


def recipe(btype: str, official_name: str, dataset: str) -> str:
    if btype.startswith("EfficientFormer") and dataset == "ade20k":
        return f"the official one ({OFFICIAL}/fpn_{official_name}_ade20k_40k.py)"
    why = ("there is no official Cityscapes recipe for any of these families" if dataset == "cityscapes"
           else "this family has no official segmentation recipe")
    return f"the EfficientFormer Semantic FPN recipe ({OFFICIAL}; {why})"


def families():
    """(registry type, config folder, config-name stem, variants, official ImageNet file pattern)."""
    from effvit_plugins.models import edgevit, efficientformer_v1, efficientformer_v2, efficientvit_msra

    return [
        ("EfficientFormerV1", "efficientformer", "efficientformer-{v}", list(efficientformer_v1.ARCH_SETTINGS),
         "efficientformer_{v}_300d.pth"),
        ("EfficientFormerV2", "efficientformer", "efficientformerv2-{v}", list(efficientformer_v2.ARCH_SETTINGS),
         "eformer_{v}_450.pth"),
        ("EdgeViT", "edgevit", "edgevit-{v}", list(edgevit.ARCH_SETTINGS), None),
        ("EfficientViTMSRA", "efficientvit_msra", "efficientvit-msra-{v}", list(efficientvit_msra.ARCH_SETTINGS),
         "efficientvit_{v}.pth"),
    ]


@functools.lru_cache(maxsize=None)
def backbone_maps(btype: str, arch: str):
    """(out_indices, channels, strides) of every stage map of the backbone."""
    import torch
    from mmseg.registry import MODELS

    import effvit_plugins  # noqa: F401  (registration)

    with torch.device("meta"):
        bb = MODELS.build(dict(type=btype, arch=arch))
    n = bb.num_stages
    return tuple(range(n)), list(bb.stage_channels), list(bb.stage_strides)


def drop_path(btype: str, arch: str) -> float:
    """The official dense backbones' stochastic depth: EfficientFormerV2 as its ImageNet recipe (segmentation/
    backbonev2.py), 0 elsewhere (EfficientFormer V1's dense backbones; no official dense model for the others)."""
    if btype == "EfficientFormerV2":
        from effvit_plugins.models.efficientformer_v2 import OFFICIAL_DROP_PATH

        return OFFICIAL_DROP_PATH[arch]
    return 0.0


def config_name(stem: str, variant: str, dataset: str) -> str:
    return f"fpn_{stem.format(v=variant)}_{DATASETS[dataset]['name']}.py"


def _comment(paragraphs) -> str:
    return "\n".join(textwrap.fill(p, width=118, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False,
                                   break_long_words=False) for p in paragraphs) + "\n"


def render(btype, stem, variant, dataset, pretrained, first) -> str:
    """The config of ``variant``; variants after the family's ``first`` inherit its config (mmseg's habit) and
    change only the backbone."""
    ds = DATASETS[dataset]
    out_indices, channels, strides = backbone_maps(btype, variant)
    family, _, var = stem.format(v=variant).rpartition("-")
    paragraphs = [f"Semantic FPN + {PRETTY[family]}-{var.upper()}, {ds['title']}. Published result: "
                  f"{NONE_PUBLISHED[btype]}."]
    if variant != first:
        paragraphs.append(f"Recipe and settings: those of {config_name(stem, first, dataset)} (inherited); only the "
                          f"backbone differs.")
    else:
        poly_min = "1e-6" if btype == "EfficientFormerV2" else "0"
        paragraphs.append(f"Recipe: {recipe(btype, stem.format(v=variant).replace('-', '_'), dataset)}: "
                          f"{SCHEDULE.format(poly_min=poly_min)}; {ds['data']}.")
        if min(strides) > 4:
            paragraphs.append(f"The backbone's maps have strides {'/'.join(map(str, strides))}: EfficientViTMSRAFPN "
                              f"(the official MSRA detection neck) adds stride-8 and stride-4 levels by transposed "
                              f"convolutions, so FPNHead gets strides 4-{max(strides)}.")
    if pretrained:
        paragraphs.append(f"ImageNet init (the official file, converted on load): --cfg-options "
                          f"model.backbone.init_cfg.type=Pretrained "
                          f"model.backbone.init_cfg.checkpoint={pretrained.format(v=variant)}")
    paragraphs.append("Generated by scripts/gen_sem_fpn_configs.py.")
    text = _comment(paragraphs)
    dp = drop_path(btype, variant)
    if variant != first:
        backbone = [f"arch='{variant}'"] + ([f"drop_path_rate={dp}"] if dp != drop_path(btype, first) else [])
        backbone += [f"{k}={v!r}" for k, v in BACKBONE_EXTRA.get((btype, variant), {}).items()]
        return text + f"""_base_ = ['./{config_name(stem, first, dataset)}']
model = dict(backbone=dict({', '.join(backbone)}), neck=dict(in_channels={channels}))
"""
    backbone = [f"type='{btype}'", f"arch='{variant}'", f"out_indices={out_indices}"]
    if dp:
        backbone.append(f"drop_path_rate={dp}")
    if btype in SEG_RESOLUTION:
        backbone.append(f"seg_resolution={SEG_RESOLUTION[btype]}")
    text += f"""_base_ = ['../_base_/sem-fpn_{ds['name']}.py']
model = dict(
    backbone=dict({', '.join(backbone)}),
"""
    if min(strides) > 4:
        extra = (min(strides) // 4).bit_length() - 1  # transposed convs down to stride 4
        levels = len(strides) + extra
        text += f"""    neck=dict(type='EfficientViTMSRAFPN', in_channels={channels}, num_outs={levels},
              num_extra_trans_convs={extra}),
    decode_head=dict(
        in_channels={[256] * levels}, in_index={list(range(levels))},
        feature_strides={[4 << i for i in range(levels)]}))
"""
    else:
        text += f"""    neck=dict(in_channels={channels}))
"""
    if btype == "EfficientFormerV2":
        text += ("param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=40000, "
                 "by_epoch=False)]\n")
    return text


def all_configs() -> dict:
    """{path relative to configs/: text} of every config this script writes."""
    out = {}
    for btype, folder, stem, variants, pretrained in families():
        for v in variants:
            for dataset in DATASETS:
                out[os.path.join(folder, config_name(stem, v, dataset))] = render(btype, stem, v, dataset,
                                                                                  pretrained, variants[0])
    return out


def main():
    for rel, text in all_configs().items():
        os.makedirs(os.path.dirname(os.path.join(ROOT, "configs", rel)), exist_ok=True)
        with open(os.path.join(ROOT, "configs", rel), "w") as f:
            f.write(text)
        print(rel)


if __name__ == "__main__":
    main()
