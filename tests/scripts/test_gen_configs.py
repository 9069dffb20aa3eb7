"""scripts/gen_configs.py: every generated file under configs/ is committed exactly as the generator writes it, every
file that carries the generator's marker is still generated (the rule for hand-written configs, configs/README.md),
the folder READMEs, metafiles, model-index.yml and README.md's model zoo are in sync, and a family the project does
not ship gets its configs from its spec alone. (What the metafiles say: tests/scripts/test_metafiles.py.)"""
import dataclasses
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import configgen  # noqa: E402
import gen_configs  # noqa: E402
from configgen import docs, metafile  # noqa: E402
from configgen.common import MARKER  # noqa: E402

from effvit_plugins.models.spec import families, get_family  # noqa: E402

FIGURES = re.compile(r"\d+\.\d\d / \d+\.\d\d")
COUNTS = re.compile(r"^(      (?:Parameters|FLOPs)): \d+$", re.M)  # a metafile's Parameters / FLOPs


@pytest.fixture(scope="module")
def entries():
    return configgen.generated()


def read(rel):
    path = os.path.join(ROOT, rel)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_every_generated_config_is_committed_unchanged(entries):
    stale = [g.path for g in entries if read(g.path) != g.text]
    assert not stale, "stale or missing generated configs (run python scripts/gen_configs.py):\n  " + "\n  ".join(stale)
    assert all(MARKER in g.text for g in entries)


def test_generated_iff_marked(entries):
    """The marker is what makes a file generated: every marked file is produced (no orphan), and no hand-written
    file (no marker) sits at a path the generator writes."""
    produced = {g.path for g in entries} | set(configgen.readme_paths()) | set(configgen.metafile_paths())
    marked = set(configgen.marked_files())
    assert not marked - produced, ("files carry the marker but are no longer generated (delete them or run "
                                   f"python scripts/gen_configs.py): {sorted(marked - produced)}")
    assert not produced - marked, f"generated paths without the marker: {sorted(produced - marked)}"


def test_folder_readmes_in_sync(entries):
    """Tables, links and published figures exactly; our params / MACs masked here (checked below and, for every
    detection config, by tests/tools/test_get_flops_det.py)."""
    for path, text in configgen.readmes(entries=entries).items():
        committed = read(path)
        assert committed is not None, f"{path} missing: run python scripts/gen_configs.py"
        assert FIGURES.sub(docs.OURS_MASK, committed) == text, f"{path} is stale: run python scripts/gen_configs.py"


def test_metafiles_and_model_index_in_sync(entries):
    """Exactly, but for Parameters / FLOPs (masked here; tests/scripts/test_metafiles.py ties them to the READMEs)."""
    for path, text in configgen.metafiles(entries=entries).items():
        committed = read(path)
        assert committed is not None, f"{path} missing: run python scripts/gen_configs.py"
        assert COUNTS.sub(rf"\1: {metafile.MASK}", committed) == text, \
            f"{path} is stale: run python scripts/gen_configs.py"
    assert read(metafile.INDEX) == configgen.model_index(), \
        f"{metafile.INDEX} is stale: run python scripts/gen_configs.py"


@pytest.mark.parametrize("spec", families(), ids=lambda s: s.key)
def test_readme_figures_of_the_first_variant(spec, entries):
    """Our params / MACs in the README rows of the family's first variant (classification, segmentation: the
    classifier / segmentor as tools/get_flops.py counts them) are what the committed configs give."""
    readme = read(docs.readme_path(spec.config_folder))
    rows = [g for g in entries if g.spec is spec and g.variant == spec.variants[0]
            and g.framework in ("mmpretrain", "mmseg")]
    assert rows or spec.cls_head is None
    for g in rows:
        (line,) = [x for x in readme.splitlines() if f"[`{os.path.basename(g.path)}`]" in x]
        assert line.endswith(f" {docs.ours(configgen.complexity(g))} |"), (g.path, line)


def test_model_zoo_in_readme(entries):
    readme = read("README.md")
    assert docs.ZOO_BEGIN in readme and docs.ZOO_END in readme, \
        f"README.md needs the model-zoo marks ({docs.ZOO_BEGIN} ... {docs.ZOO_END})"
    assert docs.replace_zoo(readme, docs.model_zoo(entries)) == readme, \
        "README.md's model zoo is stale: run python scripts/gen_configs.py"


def test_check_and_dry_run(capsys, entries):
    assert gen_configs.main(["--dry-run"]) == 0
    assert capsys.readouterr().out.split() == ([g.path for g in entries] + configgen.readme_paths()
                                               + configgen.metafile_paths() + [metafile.INDEX, configgen.your_config.PATH])
    key = families()[-1].key
    assert gen_configs.main(["--dry-run", "--family", key]) == 0
    folder = get_family(key).config_folder
    assert capsys.readouterr().out.split() == ([g.path for g in entries if g.spec.key == key]
                                               + [docs.readme_path(folder), metafile.metafile_path(folder)])
    with pytest.raises(ValueError, match="valid families"):
        gen_configs.main(["--dry-run", "--family", "no_such_family"])


def test_a_family_with_only_a_spec():
    """A family without ImageNet head, official weights, recipes or published numbers (here a copy of the first
    family's spec under another key and folder) gets detection, segmentation and Detectron2 configs, no
    classification config, and 'none published' everywhere."""
    first = families()[0]
    spec = dataclasses.replace(first, key="toyfam", name="ToyFam", title="ToyFam", config_folder="toyfam",
                               config_prefix="toyfam", cls_head=None, classifier=None, imagenet_weights=None,
                               official_recipes={}, seg_head=None)
    made = configgen.generated([spec])
    assert made and all(g.path.startswith(("configs/toyfam/", "configs/detectron2/")) for g in made)
    d2_tasks = ("mask_rcnn", "retinanet", "lvis", "semseg")
    assert {g.task for g in made} == {"retinanet", "mask-rcnn", "sem-fpn", *(f"d2-{t}" for t in d2_tasks),
                                      *(f"d2-lazy-{t}" for t in d2_tasks)}
    assert all(not g.published for g in made)
    assert all("none published" in g.text or g.task.startswith("d2-lazy-") for g in made)
    assert "type='ToyFam'" in configgen.configs([spec])[f"configs/toyfam/retinanet_toyfam-{first.variants[0]}_"
                                                        f"{'upfpn' if first.upsample_neck else 'fpn'}_8xb2-1x_coco.py"]
