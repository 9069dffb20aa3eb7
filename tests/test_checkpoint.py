"""Weights from anywhere (effvit_plugins.checkpoint.resolve_checkpoint): URLs on a loopback server download once into
the torch hub cache (TORCH_HOME is per test) and are checked against the SHA-256 prefix in their name; a wrong hash,
a 404 and a refused connection are clear errors that leave no file behind; open-mmlab:// / torchvision:// map to
the URLs of mmengine's own tables."""
import json
import os
import socket
import sys

import pytest
import torch

from effvit_plugins.checkpoint import (CheckpointError, hash_prefix, load_weights_file, resolve_checkpoint,
                                       unwrap_state_dict, zoo_url)
from effvit_plugins.convert import backbone_state_dict
from effvit_plugins.models.spec import families
from effvit_plugins.testing import save_hashed, save_official_classifier, serve_directory

# a family whose official layout differs from ours (so loading proves the conversion)
SPEC = next(s for s in families() if s.classifier is not None and s.classifier.official_key_prefixes)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The torch hub cache of this test (TORCH_HOME): ``<tmp>/torch/hub/checkpoints``."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("no_proxy", "NO_PROXY"):  # the loopback server is never reached through a proxy
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def served(tmp_path):
    """``(directory, file name, classifier)``: an official-layout classifier file named with its hash prefix."""
    d = tmp_path / "www"
    d.mkdir()
    name, classifier = save_official_classifier(str(d), SPEC)
    return d, name, classifier


def test_url_downloads_once_into_the_hub_cache(hub, served):
    d, name, classifier = served
    assert len(hash_prefix(name)) == 8
    with serve_directory(d) as base:
        local = resolve_checkpoint(base + name, progress=False)
    assert local == str(hub / name) and sorted(os.listdir(hub)) == [name]  # no temporary file left
    with open(local, "rb") as a, open(d / name, "rb") as b:
        assert a.read() == b.read()
    # the server is gone: the cached (and re-verified) file is used
    assert resolve_checkpoint(f"http://127.0.0.1:9/{name}") == local
    ours = {k[len("backbone."):]: v for k, v in classifier.state_dict().items() if k.startswith("backbone.")}
    loaded = backbone_state_dict(f"http://127.0.0.1:9/{name}", SPEC.key)  # converted from the official layout
    assert loaded.keys() == ours.keys() and all(torch.equal(loaded[k], v) for k, v in ours.items())


def test_wrong_hash_prefix_is_an_error_and_leaves_no_file(hub, tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    name = save_hashed({"w": torch.ones(2)}, str(d), "weights")
    digest = name.split("-")[1].split(".")[0]
    wrong = "weights-" + ("0" if digest[0] != "0" else "1") + digest[1:] + ".pth"
    os.rename(d / name, d / wrong)
    with serve_directory(d) as base:
        with pytest.raises(CheckpointError, match=f"SHA-256 {digest}[0-9a-f]+, expected a hash starting with "
                                                  f"{wrong[8:16]}.*deleted"):
            resolve_checkpoint(base + wrong, progress=False)
    assert not hub.exists() or os.listdir(hub) == []


def test_cached_file_with_a_wrong_hash_is_downloaded_again(hub, served):
    d, name, _ = served
    hub.mkdir(parents=True)
    (hub / name).write_bytes(b"truncated")
    with serve_directory(d) as base:
        local = resolve_checkpoint(base + name, progress=False)
    assert open(local, "rb").read() == open(d / name, "rb").read()


def test_http_errors_name_the_url_and_what_to_do(hub, tmp_path):
    with serve_directory(tmp_path) as base:
        with pytest.raises(CheckpointError, match=r"Could not download http://127\.0\.0\.1:\d+/missing-0123abcd\.pth: "
                                                  r"the server answered HTTP 404.*Check the URL"):
            load_weights_file(base + "missing-0123abcd.pth")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CheckpointError, match=rf"Could not download http://127\.0\.0\.1:{port}/w\.pth: .*refused.*"
                                              r"give its local path"):
        load_weights_file(f"http://127.0.0.1:{port}/w.pth")
    assert not hub.exists() or os.listdir(hub) == []


def test_hash_prefix_follows_torch_hub_naming():
    assert hash_prefix("resnet50-0676ba61.pth") == "0676ba61"
    assert hash_prefix("fpn_r50_512x512_160k_ade20k_20200718_131734-5b5a6ab9.pth") == "5b5a6ab9"
    assert hash_prefix("efficientvit_b0_r224.pt") is None and hash_prefix("model-v1.2.pth") is None
    assert hash_prefix("net-20.pth") is None  # fewer than 8 hex digits: not a hash


def test_zoo_names_map_to_mmengine_urls(hub, served, tmp_path, monkeypatch):
    import mmengine

    with open(os.path.join(mmengine.__path__[0], "hub", "openmmlab.json")) as f:
        table = json.load(f)
    assert zoo_url("open-mmlab://resnet50_v1c") == table["resnet50_v1c"] == zoo_url("openmmlab://resnet50_v1c")
    from torchvision.models import ResNet50_Weights

    assert zoo_url("torchvision://resnet50") == ResNet50_Weights.IMAGENET1K_V1.url
    with pytest.raises(CheckpointError, match=r"Unknown model-zoo name 'open-mmlab://resnet50_v1x'.*closest: "
                                              r"open-mmlab://resnet50_v1c"):
        zoo_url("open-mmlab://resnet50_v1x")
    # mmengine's own extension point, $MMENGINE_HOME/open_mmlab.json, pointed at the loopback server
    d, name, _ = served
    monkeypatch.setenv("MMENGINE_HOME", str(tmp_path / "mmengine"))
    (tmp_path / "mmengine").mkdir()
    with serve_directory(d) as base:
        (tmp_path / "mmengine" / "open_mmlab.json").write_text(json.dumps({"effvit_test": base + name}))
        local = resolve_checkpoint("open-mmlab://effvit_test", progress=False)
    assert local == str(hub / name)
    assert unwrap_state_dict(load_weights_file(local)).keys() == unwrap_state_dict(
        torch.load(d / name, weights_only=True)).keys()


def test_zoo_names_without_mmengine(monkeypatch):
    monkeypatch.setitem(sys.modules, "mmengine.runner", None)
    with pytest.raises(CheckpointError, match="need mmengine.*pip install mmengine.*URL or local path"):
        resolve_checkpoint("open-mmlab://resnet50_v1c")
