"""Checkpoints: round trip, foreign layouts, refusal of unsafe or broken files."""

import argparse
import pathlib
import pickle
import types

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


# ---------------------------------------------------------------- issue 15, kind 1: partial loads, compile prefix, DINO args


def test_a_file_missing_encoder_tensors_is_refused_unless_partial(tmp_path):
    enc, state = _cifar_state()
    dropped = sorted(k for k in state if k.startswith("layer4.") and not k.endswith("num_batches_tracked"))
    torch.save({"state_dict": {f"module.encoder_q.{k}": v for k, v in state.items() if not k.startswith("layer4.")}}, tmp_path / "p.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "p.pth", encoder="resnet18-cifar")
    message = str(info.value)
    assert f"{len(dropped)} of the encoder's {len(state)} tensors are missing" in message and dropped[0] in message
    assert "--allow-partial" in message and "\n" not in message
    model = load_model(tmp_path / "p.pth", encoder="resnet18-cifar", allow_partial=True)
    assert model.report.missing == dropped and model.report.loaded == len(state) - len([k for k in state if k.startswith("layer4.")])
    assert torch.equal(model.encoder.body.conv1.weight, state["conv1.weight"])


def test_shape_mismatch_counts_as_missing_and_counters_may_be_absent(tmp_path):
    _, state = _cifar_state()
    no_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(no_counters, tmp_path / "a.pt")  # e.g. exported without BatchNorm's step counters: nothing real is missing
    assert not load_model(tmp_path / "a.pt", encoder="resnet18-cifar").report.missing
    no_counters["fc_like"] = torch.zeros(3)
    no_counters["layer1.0.conv1.weight"] = torch.zeros(16, 16, 1, 1)  # another architecture's block
    torch.save(no_counters, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="1 of the encoder's .* tensors are missing from it or of another shape .*layer1.0.conv1.weight"):
        load_model(tmp_path / "b.pt", encoder="resnet18-cifar")


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module._orig_mod.", "_orig_mod.backbone.", "backbone._orig_mod."])
def test_torch_compile_prefix_is_understood(tmp_path, prefix):
    enc, state = _cifar_state()
    torch.save({"state_dict": {prefix + k: v for k, v in state.items()}}, tmp_path / "c.pt")
    model = load_model(tmp_path / "c.pt", encoder="resnet18-cifar")
    assert model.report.loaded == len(state) and "torch.compile" in model.report.layout
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.encoder.eval()(x), enc.eval()(x), atol=1e-5)


def test_a_run_saved_from_a_compiled_method_loads(tmp_path):
    from ssl_viz.checkpoint import save_state

    cfg = TrainConfig(method="simclr", encoder="small-cnn", encoder_width=8, method_cfg=MethodConfig(proj_dim=16, proj_hidden=32))
    method = build_method("simclr", build_encoder("small-cnn", 1, 8), cfg.method_cfg, num_samples=10, num_classes=10).eval()
    save_run(tmp_path / "run", method, cfg, {"method": "simclr", "encoder": "small-cnn", "in_channels": 1, "num_samples": 10, "num_classes": 10})
    save_state(tmp_path / "run", {f"_orig_mod.{k}": v for k, v in method.state_dict().items()})
    model = load_model(tmp_path / "run")
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model.encoder(x), method.encoder(x), atol=1e-6)


def test_dino_training_checkpoint_with_its_argparse_namespace_loads(tmp_path):
    enc, state = _cifar_state()
    args = argparse.Namespace(arch="resnet18", lr=0.0005, epochs=100, out_dim=65536, use_fp16=True, data_path="/data/imagenet",
                              global_crops_scale=(0.4, 1.0), drop_path_rate=0.1, dist_url="env://")
    torch.save({"student": {f"module.backbone.{k}": v for k, v in state.items()}, "teacher": {f"backbone.{k}": v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": []}, "epoch": 100, "args": args,
                "dino_loss": {"center": torch.zeros(1, 65536)}}, tmp_path / "checkpoint.pth")
    model = load_model(tmp_path / "checkpoint.pth", encoder="resnet18-cifar")
    assert model.report.loaded == len(state) and model.report.layout == "backbone"
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.encoder.eval()(x), enc.eval()(x), atol=1e-5)


class NamespaceLookalike:  # a class of this test module: not a plain container
    def __init__(self):
        self.lr = 0.1


class ArgsSubclass(argparse.Namespace):
    """The allowance is for argparse.Namespace itself, nothing derived from it."""


@pytest.mark.parametrize("extra", ["simple_namespace", "lookalike", "subclass", "namespace_holding_code", "path"])
def test_only_the_plain_namespace_is_allowed_beside_the_weights(tmp_path, extra):
    marker = tmp_path / "pwned"
    objects = {
        "simple_namespace": lambda: types.SimpleNamespace(lr=0.1),
        "lookalike": NamespaceLookalike,
        "subclass": lambda: ArgsSubclass(lr=0.1),
        "namespace_holding_code": lambda: argparse.Namespace(lr=0.1, hook=OpenOnLoad(marker)),
        "path": lambda: pathlib.PurePosixPath("/data/imagenet"),
    }
    _, state = _cifar_state()
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}, "args": objects[extra]()}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(tmp_path / "x.pth", encoder="resnet18-cifar")
    assert not marker.exists()


def test_ssl_viz_allows_exactly_one_class_beside_torchs_own():
    import subprocess
    import sys

    code = ("import torch; before = list(torch.serialization.get_safe_globals()); import ssl_viz.cli, ssl_viz.checkpoint; "
            "print([f'{g.__module__}.{g.__qualname__}' for g in torch.serialization.get_safe_globals() if g not in before])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "['argparse.Namespace']"


class OpenOnLoad:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_negative_batchnorm_variance_is_refused(tmp_path):
    _, state = _cifar_state()
    state["layer2.0.bn1.running_var"][3] = -0.5
    torch.save(state, tmp_path / "bn.pt")
    with pytest.raises(CheckpointError, match="negative running variance in 1 tensors, e.g. body.layer2.0.bn1.running_var"):
        load_model(tmp_path / "bn.pt", encoder="resnet18-cifar")
