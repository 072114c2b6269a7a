"""Checkpoints: round trip, foreign layouts, refusal of unsafe or broken files."""

import pickle

import pytest
import torch

from ssl_viz.checkpoint import CheckpointError, load_model, read_state_dict, save_run, ship_run
from ssl_viz.config import MethodConfig, TrainConfig
from ssl_viz.encoders import build_encoder
from ssl_viz.methods import build_method


def test_run_round_trip(tmp_path):
    cfg = TrainConfig(method="moco", encoder="small-cnn", encoder_width=8, method_cfg=MethodConfig(proj_dim=16, proj_hidden=32, queue_size=64))
    method = build_method("moco", build_encoder("small-cnn", 1, 8), cfg.method_cfg, num_samples=10, num_classes=10).eval()
    save_run(tmp_path / "run", method, cfg, {"method": "moco", "encoder": "small-cnn", "in_channels": 1, "num_samples": 10, "num_classes": 10})
    model = load_model(tmp_path / "run")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model.encoder(x), method.encoder(x), atol=1e-6)
        assert torch.allclose(model.embed_fn("projector")(x), method.projector(method.encoder(x)), atol=1e-6)
    assert model.embed_fn("stage:block2")(x).shape == (3, 16)
    assert set(model.representations()) >= {"backbone", "projector", "stage:block1"}
    assert not list(tmp_path.joinpath("run").glob("*.tmp"))



@pytest.mark.parametrize("method_name", ["moco", "memory_bank", "byol", "swav", "supervised"])
def test_shipped_run_keeps_encoder_and_heads_only(tmp_path, method_name):
    cfg = TrainConfig(method=method_name, encoder="small-cnn", encoder_width=8,
                      method_cfg=MethodConfig(proj_dim=16, proj_hidden=32, queue_size=64, n_prototypes=12))
    method = build_method(method_name, build_encoder("small-cnn", 1, 8), cfg.method_cfg, num_samples=5000, num_classes=10).eval()
    card = {"method": method_name, "encoder": "small-cnn", "in_channels": 1, "num_samples": 5000, "num_classes": 10}
    save_run(tmp_path / "run", method, cfg, card, trainer_state={"optimizer": {}, "loop": {}})
    before, after = ship_run(tmp_path / "run", half=True)
    assert after < before / 1.9  # half precision at least; banks, queues and target networks gone too
    assert not (tmp_path / "run" / "trainer_state.pt").exists()
    kept = read_state_dict(tmp_path / "run" / "checkpoint.safetensors")
    assert all(k.startswith(("encoder.", "projector.", "classifier.", "prototypes.")) for k in kept)
    assert not any(k in kept for k in ("bank", "queue"))
    model = load_model(tmp_path / "run")
    x = torch.rand(3, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(model.encoder(x), method.encoder(x), atol=2e-2, rtol=1e-2)
        assert model.encoder.first_conv().weight.dtype == torch.float32

LIGHTLY_INDEX = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}  # nn.Sequential(*resnet.children())


def _cifar_state():
    enc = build_encoder("resnet18-cifar", in_channels=3, width=16)
    return enc, {k: v.clone() for k, v in enc.body.state_dict().items()}


@pytest.mark.parametrize("layout,wrap", [
    ("moco", lambda s: {"state_dict": {**{f"module.encoder_q.{k}": v for k, v in s.items()}, "module.encoder_q.fc.0.weight": torch.zeros(4, 4)}, "epoch": 800}),
    ("swav", lambda s: {f"module.{k}": v for k, v in s.items()}),
    ("dino", lambda s: {"teacher": {f"backbone.{k}": v for k, v in s.items()}, "student": {}, "epoch": 3}),
    ("solo-learn", lambda s: {"state_dict": {f"backbone.{k}": v for k, v in s.items()}, "epoch": 1, "global_step": 5}),
    ("lightly", lambda s: {"state_dict": {f"backbone.{LIGHTLY_INDEX[k.split('.')[0]]}.{k.split('.', 1)[1]}": v for k, v in s.items()}}),
])
def test_foreign_layouts_are_mapped(tmp_path, layout, wrap):
    enc, state = _cifar_state()
    path = tmp_path / f"{layout}.pth.tar"
    torch.save(wrap(state), path)
    model = load_model(path, encoder="resnet18-cifar")
    assert model.report.loaded == len(state), model.report.summary()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.encoder.eval()(x), enc.eval()(x), atol=1e-5)


def test_torchvision_layout_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    enc = build_encoder("resnet18")
    state = {k: v.clone().contiguous() for k, v in enc.body.net.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    save_file(state, str(tmp_path / "r18.safetensors"))
    model = load_model(tmp_path / "r18.safetensors", encoder="resnet18")
    assert model.report.loaded == len(state) - 2 and "fc.weight" in model.report.unexpected


def test_wrong_architecture_is_reported(tmp_path):
    _, state = _cifar_state()
    torch.save(state, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="no tensor matches|encoder"):
        load_model(tmp_path / "c.pt", encoder="vit-tiny")


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"random bytes " * 50])
def test_garbage_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_model(path, encoder="resnet18")
    (tmp_path / "bad.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "bad.safetensors")


def test_code_running_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": Exploit()}))
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(path, encoder="resnet18")
    assert "pwned" not in capsys.readouterr().out


def test_truncated_and_nan_checkpoints(tmp_path):
    enc, state = _cifar_state()
    torch.save(state, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "trunc.pt", encoder="resnet18-cifar")
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN"):
        load_model(tmp_path / "nan.pt", encoder="resnet18-cifar")


def test_bare_file_needs_encoder_and_missing_path(tmp_path):
    torch.save({}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="encoder"):
        load_model(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="no model"):
        load_model(tmp_path / "nope")
