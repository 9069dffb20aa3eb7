"""effvit_plugins.apis on the repository's model index (model-index.yml and the generated metafiles): names, patterns
and tasks, the model-index root, unknown names; mmdet's DetInferencer and mmseg's MMSegInferencer built from a name
and run on a generated image; the classifiers in mmpretrain's own get_model / list_models / inference_model."""
import fnmatch
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effvit_plugins import apis
from effvit_plugins.testing import fresh_visualizers

DETECTOR = "mask-rcnn_edgevit-xxs_fpn_8xb2-1x_coco"
SEGMENTOR = "fpn_edgevit-xxs_8xb4-40k_ade20k-512x512"
CLASSIFIER = "efficientvit-msra-m0_8xb256_in1k"
# mmdet's COCO test pipeline resizes to 1333x800 (slow on a CPU): the detector runs at 128x128 through the test
# scale (index 1: Resize); every detection kept (an untrained model scores below the configs' 0.05)
SMALL_DET = {"test_dataloader.dataset.pipeline.1.scale": (128, 128), "model.test_cfg.rcnn.score_thr": 0.0}


@pytest.fixture(scope="module", autouse=True)
def visualizers_restored():
    """The inferencers here create mmengine visualizers; the process's own come back afterwards."""
    with fresh_visualizers():
        yield


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "generated.jpg"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (96, 128, 3), np.uint8)).save(path)
    return str(path)


def test_root_is_the_checkout_and_every_config_resolves():
    root = apis.model_zoo_root()
    assert (root / "model-index.yml").is_file()
    names = apis.list_models()
    assert names == sorted(names) and len(names) == len(set(names))
    for name in names:
        info = apis.get_model_info(name)
        assert info["Name"] == name and Path(info["Config"]).stem == name, info
        assert apis.config_path(name).is_file(), info["Config"]
        assert info["Results"] and {r["Task"] for r in info["Results"]} <= set(apis.TASK_LIBRARY), info["Results"]


def test_root_without_an_index_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(apis, "mim_path", lambda *parts: str(tmp_path.joinpath(*parts)))
    with pytest.raises(FileNotFoundError, match="model-index.yml.*wheel or sdist"):
        apis.model_zoo_root()
    (tmp_path / "model-index.yml").write_text("Import: []\n")
    assert apis.model_zoo_root() == tmp_path


def test_list_models_patterns_and_tasks():
    every = apis.list_models()
    edgevit = apis.list_models("*edgevit*")
    assert DETECTOR in edgevit and SEGMENTOR in edgevit and set(edgevit) == {n for n in every if "edgevit" in n}
    # as mmpretrain's list_models, a pattern also matches longer names
    assert apis.list_models("mask-rcnn") == [n for n in every if n.startswith("mask-rcnn")]
    assert apis.list_models("retinanet_*_coco") == fnmatch.filter(every, "retinanet_*_coco*")
    by_task = {task: apis.list_models(task=task) for task in apis.TASK_LIBRARY}
    assert CLASSIFIER in by_task["Image Classification"] and SEGMENTOR in by_task["Semantic Segmentation"]
    assert DETECTOR in by_task["Object Detection"] and DETECTOR in by_task["Instance Segmentation"]
    assert not set(by_task["Image Classification"]) & set(by_task["Object Detection"])
    assert set().union(*by_task.values()) == set(every)
    assert apis.list_models("*edgevit-xxs*", task="Semantic Segmentation") == [
        n for n in by_task["Semantic Segmentation"] if "edgevit-xxs" in n]
    with pytest.raises(ValueError, match="Unknown task 'Detection'.*Object Detection"):
        apis.list_models(task="Detection")


def test_the_task_and_the_config_name_one_library():
    """The inferencer is chosen from the config (default_scope); the metafile's tasks must say the same library,
    for one model of each kind and family (configs of one kind share their bases)."""
    seen = set()
    for name in apis.list_models():
        tasks = {r["Task"] for r in apis.get_model_info(name)["Results"]}
        kind = (apis.get_model_info(name)["In Collection"], tuple(sorted(tasks)))
        if kind in seen:
            continue
        seen.add(kind)
        assert {apis.TASK_LIBRARY[t] for t in tasks} == {apis.library_of(apis.get_config(name))}, name


def test_library_of_a_config_without_default_scope():
    from mmengine.config import Config

    for model_type, library in (("MaskRCNN", "mmdet"), ("EncoderDecoder", "mmseg"), ("ImageClassifier", "mmpretrain")):
        assert apis.library_of(Config(dict(model=dict(type=model_type)))) == library
    with pytest.raises(ValueError, match="model.type='NoSuchModel'.*Set default_scope"):
        apis.library_of(Config(dict(model=dict(type="NoSuchModel"))))


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError) as e:
        apis.get_config("mask-rcnn_edgevit-xxs_fpn_8xb2-1x_cocoo")
    msg = e.value.args[0]
    assert DETECTOR in msg and "list_models" in msg and "model index" in msg
    with pytest.raises(KeyError, match="No model named 'no-such-model'"):
        apis.inferencer("no-such-model")
    with pytest.raises(FileNotFoundError, match="Config file not found: 'missing.py'"):
        apis.inferencer("missing.py")


def test_official_weights_need_a_name_with_weights():
    without = [n for n in apis.list_models() if not apis.get_model_info(n).get("Weights")]
    with pytest.raises(ValueError, match=f"{without[0]!r} has no official weights.*Models with official weights"):
        apis.inferencer(without[0], weights="official")
    with pytest.raises(ValueError, match="needs a model name"):
        apis.inferencer(str(apis.config_path(SEGMENTOR)), weights="official")


def test_det_inferencer_from_a_name(image):
    from mmdet.apis import DetInferencer

    inferencer = apis.inferencer(DETECTOR, cfg_options=SMALL_DET)
    assert isinstance(inferencer, DetInferencer)
    assert len(inferencer.model.dataset_meta["classes"]) == 80
    out = inferencer(image, return_vis=True, no_save_vis=True, pred_score_thr=0.0)
    pred = out["predictions"][0]
    assert len(pred["labels"]) == len(pred["scores"]) == len(pred["bboxes"]) == len(pred["masks"]) > 0
    assert out["visualization"][0].shape == (96, 128, 3)


def test_mmseg_inferencer_from_a_name(image):
    from mmseg.apis import MMSegInferencer

    inferencer = apis.inferencer(SEGMENTOR)
    assert isinstance(inferencer, MMSegInferencer)
    assert len(inferencer.visualizer.dataset_meta["classes"]) == 150  # ADE20K, not the Cityscapes default
    out = inferencer(image, return_vis=True)
    assert out["predictions"].shape == (96, 128) and out["predictions"].max() < 150
    assert out["visualization"].shape == (96, 128, 3)  # one image: mmseg returns it unwrapped


def test_classifiers_in_mmpretrains_own_api(image):
    import mmpretrain
    from mmengine.registry import init_default_scope
    from mmpretrain.apis import ModelHub

    classifiers = apis.list_models(task="Image Classification")
    assert mmpretrain.list_models("*efficientvit-msra*") == [n for n in classifiers if "efficientvit-msra" in n]
    assert set(classifiers) <= set(mmpretrain.list_models())
    assert not set(mmpretrain.list_models()) & (set(apis.list_models()) - set(classifiers))
    assert apis.register_mmpretrain_models() == []  # already done by `import effvit_plugins`: nothing again
    for name in classifiers:  # mmpretrain's get_model(name, pretrained=True) loads this URL
        assert ModelHub._models_dict[name].weights == apis.get_model_info(name).get("Weights")
        assert ModelHub._models_dict[name].config == str(apis.config_path(name))

    # mmpretrain's inferencers build their pipeline in the current default scope, which an mmdet/mmseg inferencer
    # earlier in this process set (a fresh process has none): what a user of both does (docs/apis.md)
    init_default_scope("mmpretrain")
    model = mmpretrain.get_model(CLASSIFIER)
    result = mmpretrain.inference_model(model, image)
    assert 0 <= result["pred_label"] < 1000 and isinstance(result["pred_class"], str)


def test_classifier_inferencer_next_to_the_others_and_its_weights(image, tmp_path):
    import torch
    from mmpretrain.apis import ImageClassificationInferencer

    from effvit_plugins.testing import randomize_model

    apis.inferencer(SEGMENTOR)  # leaves mmseg as the default scope
    first = apis.inferencer(CLASSIFIER)
    assert isinstance(first, ImageClassificationInferencer)
    assert first(image)[0]["pred_scores"].shape == (1000,)
    # weights=<a checkpoint file>: a second model gives the first one's scores (random, well-scaled weights: an
    # untrained model's scores are all about 1/1000)
    randomize_model(first.model, seed=0)
    scores = first(image)[0]["pred_scores"]
    assert scores.max() > 10 * scores.min()
    torch.save({"state_dict": first.model.state_dict()}, tmp_path / "classifier.pth")
    second = apis.inferencer(CLASSIFIER, weights=str(tmp_path / "classifier.pth"))
    np.testing.assert_allclose(second(image)[0]["pred_scores"], scores, rtol=1e-4, atol=1e-7)
