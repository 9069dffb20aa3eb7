"""tools/convert_checkpoint.py SRC may be a URL: downloaded into the torch hub cache (hash-checked), converted."""
import torch

from effvit_plugins.models.spec import families
from effvit_plugins.testing import save_official_classifier, serve_directory

SPEC = next(s for s in families() if s.classifier is not None and s.classifier.official_key_prefixes)


def test_src_url(tmp_path, monkeypatch, load_tool, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    (tmp_path / "www").mkdir()
    name, classifier = save_official_classifier(str(tmp_path / "www"), SPEC)
    tool = load_tool("convert_checkpoint")
    with serve_directory(tmp_path / "www") as base:
        assert tool.main([base + name, str(tmp_path / "ours.pth")]) == 0
        assert f"{SPEC.title} classification checkpoint" in capsys.readouterr().out
        assert tool.main([base + "gone-0123abcd.pth", str(tmp_path / "x.pth")]) == 2
    assert "HTTP 404" in capsys.readouterr().err
    out = torch.load(tmp_path / "ours.pth", weights_only=True)
    assert out["meta"]["converted_from"] == name
    res = classifier.load_state_dict(out["state_dict"], strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    expected = classifier.state_dict()
    assert all(torch.equal(out["state_dict"][k], v) for k, v in expected.items())
