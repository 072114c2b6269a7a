"""Augmentation diagnosis: the two classic claims, the probe, the verdict rules, exports, ablation sweep and CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_viz.analysis.diagnosis import (
    FeatureProbe,
    ablation_configs,
    ablation_policy,
    attach_ablation,
    content_mask,
    diagnose,
    diagnosis_figure,
    invariance_score,
    judge,
    normalised_drop,
    probe_features,
)
from ssl_viz.augment import SINGLE_TRANSFORMS, BatchAugment, parse_policy, single_transform
from ssl_viz.config import TrainConfig
from ssl_viz.data import load_dataset
from ssl_viz.sweeps import run_ablation

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN, N_TEST = 600, 300


def small(name: str, label: str):
    return load_dataset(name, "train", label=label, n=N_TRAIN), load_dataset(name, "test", label=label, n=N_TEST)


# the full taxonomy where the claim is "harmful"; the augmentations under test where it is "not harmful"
# (the full tables of all four cases at default sizes are in the issue report)


@pytest.fixture(scope="module")
def textures_orientation():
    return diagnose(*small("textures", "orientation"))


@pytest.fixture(scope="module")
def textures_source():
    return diagnose(*small("textures", "source"), augmentations=["color_jitter", "rotate90", "rotation", "flip"])


@pytest.fixture(scope="module")
def shapes_color():
    return diagnose(*small("shapes", "color"))


@pytest.fixture(scope="module")
def shapes_shape():
    return diagnose(*small("shapes", "shape"), augmentations=["color_jitter", "grayscale", "crop", "jigsaw"])


# ----------------------------------------------------------------------------- the two classic claims


def test_rotation_is_harmful_for_texture_orientation(textures_orientation):
    d = textures_orientation
    assert [a.name for a in d.augmentations] == SINGLE_TRANSFORMS
    assert d.probe_clean > 0.65 and d.chance == pytest.approx(0.25, abs=0.01)    # the probe sees orientation
    for name in ("rotate90", "rotation"):
        a = d.get(name)
        assert a.verdict == "harmful", a.explanation
        assert a.probe_transformed < 0.4 and a.probe_adapted < 0.45                # rotated classes look like other classes
        assert a.label_damage > 0.6
        assert "probe accuracy drops" in a.explanation and "orientation classes" in a.explanation
    # k * 90 degrees with k uniform in {1, 2, 3}: k = 2 keeps orientation (mod 180), so about a third stays right
    assert d.get("rotate90").probe_transformed == pytest.approx(d.probe_clean / 3, abs=0.12)
    assert d.get("color_jitter").verdict == "suitable"                             # brightness/contrast keep orientation
    assert d.get("grayscale").verdict == "neutral" and d.get("grayscale").image_change == 0.0   # grayscale images already


def test_rotation_is_fine_for_texture_source(textures_source):
    d = textures_source
    assert d.probe_clean > 0.85
    for name in ("rotate90", "rotation", "flip"):
        a = d.get(name)
        assert a.verdict != "harmful", a.explanation
        assert a.label_damage < 0.15
    assert d.get("rotate90").verdict == "suitable" and d.get("rotate90").probe_transformed > 0.85


def test_color_augmentations_are_harmful_for_shape_color(shapes_color):
    d = shapes_color
    assert d.probe_clean > 0.95 and "color" in d.probe_groups
    assert d.get("grayscale").verdict == "harmful"
    assert d.get("grayscale").probe_transformed < 0.4                              # isoluminant colours: gray erases them
    assert d.get("color_jitter").verdict == "harmful"
    assert d.get("color_jitter").probe_transformed < 0.7
    for name in ("rotate90", "rotation", "flip", "blur"):                          # geometry keeps colour
        assert d.get(name).verdict == "suitable", d.get(name).explanation


def test_color_augmentations_are_fine_for_shape_label(shapes_shape):
    d = shapes_shape
    assert d.probe_clean > 0.9 and "color" not in d.probe_groups
    for name in ("color_jitter", "grayscale"):
        a = d.get(name)
        assert a.verdict == "suitable", a.explanation
        assert a.label_damage < 0.05 and a.probe_transformed > 0.9
    # a 20%-area crop or a 3x3 jigsaw of a small shape does destroy it
    assert d.get("crop").verdict == "harmful" and d.get("jigsaw").verdict == "harmful"


def test_verdicts_differ_only_where_the_label_differs(textures_orientation, textures_source, shapes_color, shapes_shape):
    """Same images, different label: the damage must follow the label, not the images."""
    assert textures_orientation.get("rotate90").image_change == pytest.approx(textures_source.get("rotate90").image_change)
    assert textures_orientation.get("rotate90").label_damage - textures_source.get("rotate90").label_damage > 0.5
    assert shapes_color.get("grayscale").label_damage - shapes_shape.get("grayscale").label_damage > 0.5


# ----------------------------------------------------------------------------- probe and masks


def test_probe_features_groups_and_shapes():
    x = load_dataset("shapes", "test", n=20).float_images()
    feats = probe_features(x)
    assert set(feats) == {"pixels", "intensity", "color", "orientation", "isotropic", "layout", "random-conv"}
    assert all(f.shape[0] == 20 and torch.isfinite(f).all() for f in feats.values())
    gray = probe_features(x[:, :1])
    assert "color" not in gray                                                    # no colour group for 1-channel data
    tiny = probe_features(load_dataset("digits", "test").float_images()[:5])       # 8x8 images are upsampled
    assert all(torch.isfinite(f).all() for f in tiny.values())
    # structural features ignore global brightness and contrast
    dimmer = probe_features(0.2 + 0.5 * x, groups=["orientation", "random-conv"])
    assert torch.allclose(dimmer["random-conv"], probe_features(x, groups=["random-conv"])["random-conv"], atol=1e-3)


def test_orientation_features_follow_the_stripes():
    from ssl_viz.data.textures import gratings

    rng = np.random.default_rng(0)
    x = torch.from_numpy(gratings(np.array([0.0, 45.0, 90.0, 135.0]), rng)).unsqueeze(1)
    dist = probe_features(x, groups=["orientation"])["orientation"][:, :8]         # finest scale, 8 orientations
    assert dist.argmax(1).tolist() == [0, 2, 4, 6]                                 # 0, 45, 90, 135 degrees


def test_content_mask_marks_rotation_padding():
    cfg = single_transform("rotation")
    ones = torch.ones(16, 1, 32, 32)
    out = BatchAugment(cfg)(ones, torch.Generator().manual_seed(5))
    mask = content_mask(cfg, ones.shape, 5)
    assert mask.shape == (16, 1, 32, 32)
    assert torch.all(out[mask.bool()] > 0.99) and torch.all(out[~mask.bool()] <= 0.99)
    assert (mask == 0).any()                                                       # some corners are padding
    assert content_mask(single_transform("rotate90"), ones.shape, 5) is None       # quarter turns never pad


def test_probe_selects_what_the_label_needs():
    tr = load_dataset("shapes", "train", label="color", n=300)
    probe = FeatureProbe().fit(tr.float_images(), tr.labels)
    assert probe.groups_ == ["color"] and probe.validation_accuracy_ > 0.95
    te = load_dataset("shapes", "test", label="color", n=100)
    assert probe.score(te.float_images(), te.labels) > 0.95


# ----------------------------------------------------------------------------- numbers and rules


def test_normalised_drop_and_invariance_score():
    assert normalised_drop(0.9, 0.25, 0.25) == pytest.approx(1.0)
    assert normalised_drop(0.9, 0.9, 0.25) == 0.0
    assert normalised_drop(0.9, 0.95, 0.25) == 0.0                                 # clipped
    assert normalised_drop(0.25, 0.1, 0.25) == 0.0                                 # reference at chance: nothing to lose
    assert normalised_drop(1.0, 0.625, 0.25) == pytest.approx(0.5)
    assert invariance_score(1.0, 0.3) == pytest.approx(1.0)
    assert invariance_score(0.3, 0.3) == pytest.approx(0.0)
    assert invariance_score(0.65, 0.3) == pytest.approx(0.5)


def test_judge_rules():
    assert judge("x", 0.0, 0.9, 0.9, 0.9, 0.0)[0] == "neutral"                      # nothing changes
    assert judge("x", 0.5, 0.9, 0.3, 0.3, 0.9)[0] == "harmful"
    assert judge("x", 0.5, 0.9, 0.88, 0.9, 0.03)[0] == "suitable"
    assert judge("x", 0.5, 0.9, 0.7, 0.75, 0.2)[0] == "neutral"
    verdict, text = judge("rotate90", 0.9, 0.97, 0.41, 0.4, 0.8, invariance=0.9, label="orientation")
    assert verdict == "harmful" and "0.97 to 0.41" in text and "already invariant" in text and "orientation" in text
    assert "not invariant" in judge("flip", 0.9, 0.9, 0.9, 0.9, 0.0, invariance=0.1)[1]


def test_diagnosis_with_an_encoder_and_exports(tmp_path):
    from ssl_viz.encoders import build_encoder

    tr, te = load_dataset("textures", "train", n=200), load_dataset("textures", "test", n=100)
    encoder = build_encoder("small-cnn", in_channels=1, width=8).eval()
    seen = []
    d = diagnose(tr, te, encoder, ["grayscale", "rotate90"], encoder_name="tiny", progress=lambda f, t: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert 0.0 <= d.knn_top1 <= 1.0 and 0.0 <= d.linear_top1 <= 1.0
    gray, rot = d.get("grayscale"), d.get("rotate90")
    assert gray.sim_aug == pytest.approx(1.0, abs=1e-5) and gray.invariance == pytest.approx(1.0, abs=1e-4)   # identity here
    assert -1.0 <= rot.sim_random <= 1.0 and rot.invariance < 1.0
    data = json.loads(d.to_json())
    assert data["encoder"] == "tiny" and [a["name"] for a in data["augmentations"]] == ["grayscale", "rotate90"]
    assert {"name", "verdict", "explanation", "label_damage", "probe_transformed", "invariance"} <= set(data["augmentations"][0])
    lines = d.to_csv().splitlines()
    assert lines[0].startswith("name,verdict,") and len(lines) == 3
    fig = diagnosis_figure(d)
    assert len(fig.data) >= 2                                                      # damage bars + invariance markers


def test_diagnosis_needs_labels():
    photos = load_dataset("photos", "test")
    with pytest.raises(ValueError, match="labels"):
        diagnose(photos, photos, augmentations=["flip"])


# ----------------------------------------------------------------------------- ablation sweep


def test_ablation_policies():
    added = parse_policy(ablation_policy("crop+flip", "rotate90", "add"))
    assert added.rotate90_p == 0.5 and added.flip_p == 0.5 and added.crop_scale == (0.2, 1.0)
    assert parse_policy(ablation_policy("simclr", "crop", "add", strength=0.5)).crop_scale == (0.6, 1.0)
    removed = parse_policy(ablation_policy("simclr", "flip", "remove"))
    assert removed.flip_p == 0.0 and removed.jitter_p == parse_policy("simclr").jitter_p
    assert parse_policy(ablation_policy("simclr", "crop", "remove")).crop_scale == (1.0, 1.0)
    assert parse_policy(ablation_policy("simclr", "color_jitter", "remove")).jitter_p == 0.0
    configs = ablation_configs(TrainConfig(dataset="digits", augment="simclr"), ["flip", "blur"], "remove", budget=30)
    assert list(configs) == ["baseline", "flip", "blur"] and all(c.time_budget == 30 for c in configs.values())
    assert configs["baseline"].augment == "simclr" and parse_policy(configs["flip"].augment).flip_p == 0.0
    with pytest.raises(ValueError, match="mode"):
        ablation_policy("simclr", "flip", "toggle")


def test_ablation_sweep_in_process(tmp_path, shapes_color):
    tr, te = load_dataset("digits", "train").head(300), load_dataset("digits", "test").head(150)
    base = TrainConfig(method="simclr", encoder="small-cnn", encoder_width=8, dataset="digits", augment="crop", batch_size=64,
                       knn_every=0, device="cpu", lr=1e-3)
    accs = run_ablation(base, ["grayscale"], tr, te, mode="add", budget=1.0, run_root=tmp_path)
    assert set(accs) == {"baseline", "grayscale"} and all(0.0 <= v <= 1.0 for v in accs.values())
    import copy

    d = attach_ablation(copy.deepcopy(shapes_color), accs, "add")
    assert d.get("grayscale").ablation_delta == pytest.approx(accs["grayscale"] - accs["baseline"])
    assert d.get("flip").ablation_delta is None and d.ablation["mode"] == "add"


def test_launch_ablation_queues_runs_and_reads_finished_ones(tmp_path, monkeypatch, tiny_model_dir):
    import shutil

    from ssl_viz import jobs
    from ssl_viz.sweeps import ablation_results, launch_ablation, load_sweep, run_state

    started = []

    def fake_start_run(cfg, root=None):
        jobs.validate_config(cfg)                           # what the real start_run checks first
        started.append(cfg)
        d = tmp_path / f"run{len(started)}"
        d.mkdir()
        return d

    monkeypatch.setattr(jobs, "start_run", fake_start_run)
    base = TrainConfig(method="simclr", encoder="small-cnn", encoder_width=8, dataset="digits", augment="crop", knn_every=0)
    dirs = launch_ablation(base, ["flip", "blur"], "add", budget=5, manifest=tmp_path / "sweep.json")
    assert list(dirs) == ["baseline", "flip", "blur"] and [c.time_budget for c in started] == [5, 5, 5]
    assert parse_policy(started[1].augment).flip_p == 0.5
    mode, loaded = load_sweep(tmp_path / "sweep.json")
    assert mode == "add" and loaded == dirs
    for f in tiny_model_dir.iterdir():                      # the baseline "finished": a real checkpoint
        shutil.copy(f, dirs["baseline"] / f.name)
    (dirs["baseline"] / "status.json").write_text(json.dumps({"state": "done"}))
    (dirs["flip"] / "status.json").write_text(json.dumps({"state": "running"}))
    assert [run_state(d) for d in dirs.values()] == ["done", "running", "unknown"]
    accs = ablation_results(dirs, load_dataset("digits", "train").head(200), load_dataset("digits", "test").head(100))
    assert 0.0 <= accs["baseline"] <= 1.0 and accs["flip"] is None and accs["blur"] is None


# ----------------------------------------------------------------------------- command line


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ssl_viz", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_diagnose(tmp_path):
    out, table = tmp_path / "d.json", tmp_path / "d.csv"
    result = cli("diagnose", "--dataset", "shapes", "--label", "color", "--augmentations", "grayscale,flip", "--n-train", "400",
                 "--n-test", "200", "--encoder", "small-cnn", "--out", str(out), "--csv", str(table))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert [a["name"] for a in data["augmentations"]] == ["grayscale", "flip"]
    verdicts = {a["name"]: a["verdict"] for a in data["augmentations"]}
    assert verdicts == {"grayscale": "harmful", "flip": "suitable"}
    assert data["label"] == "color" and data["encoder"] == "untrained small-cnn" and data["augmentations"][0]["invariance"] is not None
    assert table.read_text().startswith("name,verdict,")
    assert json.loads(result.stdout.strip().splitlines()[-1])["verdicts"] == verdicts


@pytest.mark.parametrize("args,message", [
    (["--dataset", "shapes", "--augmentations", "wobble"], "unknown augmentation"),
    (["--dataset", "shapes", "--strength", "2"], "--strength"),
    (["--dataset", "photos"], "no labels"),
    (["--dataset", "shapes", "--label", "weight"], "no factor"),
    (["--dataset", "imagenet-22k"], "unknown dataset"),
    (["--dataset", "digits", "--checkpoint", "/no/such/run"], "no model"),
])
def test_cli_diagnose_errors(tmp_path, capsys, args, message):
    from ssl_viz.cli import main

    assert main(["diagnose", *args, "--out", str(tmp_path / "x.json")]) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "x.json").exists()
