"""Safe checkpoints: round trip, atomic writes, and hostile files refused without running code."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import pytest
import torch

from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
from modhifi_core.errors import InputError
from modhifi_core.models import ModelConfig, build_model


def _model():
    torch.manual_seed(0)
    config = ModelConfig(name="resnet18", width=4)
    return build_model(config), config


def test_round_trip_rebuilds_identical_model(tmp_path):
    model, config = _model()
    sha = save_checkpoint(tmp_path / "m.pt", model, config, metadata={"parents": {"base": "abc"}})
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt.sha256 == sha
    assert ckpt.metadata["parents"] == {"base": "abc"}
    assert "code_version" in ckpt.metadata
    x = torch.randn(3, 1, 8, 8)
    model.eval()
    torch.testing.assert_close(ckpt.model(x), model(x), rtol=0, atol=0)


def test_resized_layers_round_trip(tmp_path):
    """A model with fewer channels in a layer (as after pruning) reloads from config + weights."""
    model, config = _model()
    conv = model.layer1[0].conv1
    bn = model.layer1[0].bn1
    keep = torch.arange(2)
    model.layer1[0].conv1 = torch.nn.Conv2d(conv.in_channels, 2, 3, 1, 1, bias=False)
    model.layer1[0].conv1.weight.data = conv.weight.data[keep].clone()
    new_bn = torch.nn.BatchNorm2d(2)
    new_bn.weight.data = bn.weight.data[keep].clone()
    model.layer1[0].bn1 = new_bn
    second = model.layer1[0].conv2
    model.layer1[0].conv2 = torch.nn.Conv2d(2, second.out_channels, 3, 1, 1, bias=False)
    model.layer1[0].conv2.weight.data = second.weight.data[:, keep].clone()
    save_checkpoint(tmp_path / "p.pt", model, config)
    ckpt = load_checkpoint(tmp_path / "p.pt")
    assert ckpt.config.layer_shapes["layer1.0.conv1"] == [2, 4, 3, 3]
    x = torch.randn(2, 1, 8, 8)
    model.eval()
    torch.testing.assert_close(ckpt.model(x), model(x))


class _Payload:
    """Unpickling this object would create a file: the canary of a code-execution attack."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_code_execution_payload_is_refused_and_never_runs(tmp_path):
    canary = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "modhifi-checkpoint", "version": 1, "x": _Payload(str(canary))}, evil)
    assert not canary.exists()
    with pytest.raises(InputError, match="could run code"):
        load_checkpoint(evil)
    assert not canary.exists()


def test_raw_pickle_payload_is_refused(tmp_path):
    canary = tmp_path / "pwned2.txt"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Payload(str(canary))))
    with pytest.raises(InputError):
        load_checkpoint(evil)
    assert not canary.exists()


def test_truncated_file_is_refused(tmp_path):
    model, config = _model()
    save_checkpoint(tmp_path / "m.pt", model, config)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="refusing to load"):
        load_checkpoint(tmp_path / "cut.pt")


@pytest.mark.parametrize("content", [{"weights": torch.zeros(2)}, [1, 2, 3], torch.zeros(3)])
def test_not_a_checkpoint_is_refused(tmp_path, content):
    torch.save(content, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a modhifi checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_text_file_is_refused(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(InputError):
        load_checkpoint(tmp_path / "notes.pt")


def test_config_and_weights_that_disagree_are_refused(tmp_path):
    model, config = _model()
    save_checkpoint(tmp_path / "m.pt", model, config)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["width"] = 8  # weights are width 4
    payload.pop("digest")  # else the digest refuses the edit first; this tests the config check itself
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="config and weights disagree"):
        load_checkpoint(tmp_path / "bad.pt")


def test_invalid_config_is_refused(tmp_path):
    model, config = _model()
    save_checkpoint(tmp_path / "m.pt", model, config)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["name"] = "alexnet"
    payload.pop("digest")  # else the digest refuses the edit first; this tests the config check itself
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="invalid model config"):
        load_checkpoint(tmp_path / "bad.pt")


def test_save_is_atomic_previous_file_survives_a_failed_write(tmp_path, monkeypatch):
    model, config = _model()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, config)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, model, config, metadata={"changed": True})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind


def test_checkpoint_is_a_zip_of_tensors_only(tmp_path):
    """The saved file holds no pickled classes beyond torch's tensor rebuild functions."""
    model, config = _model()
    save_checkpoint(tmp_path / "m.pt", model, config)
    with zipfile.ZipFile(tmp_path / "m.pt") as archive:
        pickled = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        globals_used = {
            arg
            for op, arg, _ in __import__("pickletools").genops(io.BytesIO(archive.read(pickled)))
            if op.name in ("GLOBAL", "STACK_GLOBAL") and arg
        }
    assert all(g.startswith(("torch", "collections")) for g in globals_used), globals_used
