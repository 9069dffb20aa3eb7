"""The model index (model-index.yml and configs/<folder>/metafile.yml, written by scripts/gen_configs.py; their
staleness: tests/scripts/test_gen_configs.py): it parses with the ``modelindex`` package, lists every generated
OpenMMLab config once under its file stem, its numbers are the published ones of
effvit_plugins/data/published_results.json and our params / MACs of the folder READMEs, weights only where the
family has an official direct download, and mmpretrain's ModelHub takes it."""
import dataclasses
import os
import sys
from collections import Counter

import pytest
import yaml
from modelindex.load_model_index import load

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import configgen  # noqa: E402

import effvit_plugins  # noqa: E402
from effvit_plugins.models.spec import families  # noqa: E402
from effvit_plugins.utils import published  # noqa: E402

TASKS = {"Image Classification", "Object Detection", "Instance Segmentation", "Semantic Segmentation"}
DATASETS = {"ImageNet-1k", "COCO", "LVIS v1", "Cityscapes", "ADE20K"}
# the data file's metric keys as the metafiles name them (mmpretrain / mmdet / mmseg metafiles)
METRICS = {"top1": "Top 1 Accuracy", "box_AP": "box AP", "box_AP50": "box AP50", "box_AP75": "box AP75",
           "mask_AP": "mask AP", "mask_AP50": "mask AP50", "mask_AP75": "mask AP75", "mIoU": "mIoU"}


@pytest.fixture(scope="module")
def index():
    mi = load(os.path.join(ROOT, "model-index.yml"))
    mi.build_models_with_collections()
    return mi


@pytest.fixture(scope="module")
def listed():
    """The generated OpenMMLab configs (Detectron2 ones are not in the index)."""
    return [g for g in configgen.generated() if g.framework != "detectron2"]


def test_index_imports_one_metafile_per_folder():
    with open(os.path.join(ROOT, "model-index.yml"), encoding="utf-8") as f:
        imports = yaml.safe_load(f)["Import"]
    assert imports == [f"configs/{folder}/metafile.yml" for folder in dict.fromkeys(s.config_folder
                                                                                    for s in families())]
    for path in imports:
        assert load(os.path.join(ROOT, path)).models, path


def test_one_entry_per_generated_config(index, listed):
    names = Counter(m.name for m in index.models)
    assert not [n for n, c in names.items() if c > 1], "names listed twice"
    assert sorted(names) == sorted(os.path.basename(g.path)[:-3] for g in listed)
    for m in index.models:
        folder = os.path.basename(os.path.dirname(m.filepath))
        assert m.config == f"configs/{folder}/{m.name}.py", m.name
        assert os.path.isfile(os.path.join(ROOT, m.config)), m.config


def test_collections_from_the_specs(index):
    by_name = {c.name: c for c in index.collections}
    assert sorted(by_name) == sorted(s.title for s in families())
    for s in families():
        c = by_name[s.title]
        assert c.paper == {"Title": s.paper.title, "URL": f"https://arxiv.org/abs/{s.paper.arxiv}"}
        assert c.code == {"URL": f"https://github.com/{s.paper.code}", "Version": effvit_plugins.__version__}
        assert c.readme == f"configs/{s.config_folder}/README.md" and os.path.isfile(os.path.join(ROOT, c.readme))
        assert list(c.metadata.architecture) == list(s.architecture)
        models = [m for m in index.models if m.in_collection == s.title]
        assert models and all(m.config.startswith(f"configs/{s.config_folder}/") for m in models)
        assert set(c.metadata.training_data) == {m.metadata.training_data for m in models}


def test_metrics_are_the_published_numbers(index):
    """Every number is the data file's for that config, and every published number of a listed config is there."""
    want = {}
    for section in ("classification", "segmentation", "detection"):
        for row in published.rows(section):
            if row.get("config"):
                for k, fig in published.figures(row).items():
                    if k in METRICS:
                        want.setdefault(row["config"], {})[METRICS[k]] = fig.value
    for m in index.models:
        got = {}
        for r in m.results:
            assert r.task in TASKS and r.dataset in DATASETS and r.dataset == m.metadata.training_data, m.name
            assert isinstance(r.metrics, dict), m.name
            got.update(r.metrics)
        assert got == want.pop(m.config, {}), m.name
    assert not want, f"published numbers of configs the index does not list: {want}"


def test_counts_are_the_readme_figures(index):
    """Parameters / FLOPs (MACs) are integers and are what the folder README's "Ours" column prints (those of each
    family's first variant are checked against a fresh count by tests/scripts/test_gen_configs.py)."""
    readmes = {}
    for m in index.models:
        params, flops = m.metadata.parameters, m.metadata.flops
        assert isinstance(params, int) and isinstance(flops, int) and params > 0 and flops > 0, m.name
        readme = os.path.join(os.path.dirname(m.filepath), "README.md")
        if readme not in readmes:
            with open(readme, encoding="utf-8") as f:
                readmes[readme] = f.read().splitlines()
        (row,) = [x for x in readmes[readme] if f"[`{m.name}.py`]" in x]
        assert row.endswith(f" {params / 1e6:.2f} / {flops / 1e9:.2f} |"), (m.name, row)


def test_weights_only_where_an_official_direct_download_exists(index, listed):
    by_name = {os.path.basename(g.path)[:-3]: g for g in listed}
    with_weights = 0
    for m in index.models:
        g = by_name[m.name]
        url = g.spec.weights_url_of(g.variant) if g.task == "cls" else None
        assert m.weights == url, m.name
        if url:
            with_weights += 1
            assert url.startswith("https://") and url.endswith(os.path.splitext(g.spec.weights_file(g.variant))[1])
            assert m.data["Converted From"] == {"Weights": url, "Code": f"https://github.com/{g.spec.paper.code}"}
        else:
            assert "Converted From" not in m.data, m.name
    assert with_weights == sum(1 for s in families() for v in s.variants if s.cls_head and s.weights_url_of(v))


def test_mmpretrain_model_hub_takes_the_index(monkeypatch):
    """mmpretrain's ModelHub registers the index (config paths relative to the repository root), lists our
    classifiers and returns their configs; its registry is restored afterwards."""
    from mmpretrain.apis import ModelHub, list_models

    monkeypatch.setattr(ModelHub, "_models_dict", dict(ModelHub._models_dict))
    ModelHub.register_model_index(os.path.join(ROOT, "model-index.yml"), config_prefix=ROOT)
    spec = families()[0]
    name = f"{spec.config_prefix}-{spec.variants[0]}_{spec.cls_batch}_in1k"
    assert name in list_models(f"{spec.config_prefix}*")
    cfg = ModelHub.get(name).config
    assert cfg.model.backbone.type == spec.name and cfg.model.backbone.arch == spec.variants[0]


def test_a_family_without_published_numbers_or_weights():
    """Its metafile lists its configs with empty Metrics and no Weights (modelindex reads that)."""
    first = families()[0]
    spec = dataclasses.replace(first, key="toyfam", name="ToyFam", title="ToyFam", config_folder="toyfam",
                               config_prefix="toyfam", weights_url=None, weights_variants=(), official_recipes={},
                               seg_head=None)
    (text,) = configgen.metafiles(entries=configgen.generated([spec]), complexity=lambda g: (1, 2)).values()
    doc = yaml.safe_load(text)
    assert [c["Name"] for c in doc["Collections"]] == ["ToyFam"]
    assert doc["Models"] and all("Weights" not in m for m in doc["Models"])
    assert all(r["Metrics"] == {} for m in doc["Models"] for r in m["Results"])
    assert {m["Metadata"]["Parameters"] for m in doc["Models"]} == {1}
