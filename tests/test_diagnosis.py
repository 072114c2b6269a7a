"""Augmentation diagnosis: the two classic claims, the probe, the verdict rules, exports, ablation sweep and CLI;
the dose-response per shapes factor, the recommended policy and its verification runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_viz.analysis.diagnosis import (
    PROBE_GROUPS,
    STRENGTHS,
    FeatureProbe,
    ProbeBench,
    ablation_configs,
    ablation_policy,
    attach_ablation,
    content_mask,
    diagnose,
    diagnosis_figure,
    dose_figure,
    dose_response,
    example_strip,
    invariance_score,
    judge,
    normalised_drop,
    probe_features,
    recommend_policy,
)
from ssl_viz.augment import POLICIES, SINGLE_TRANSFORMS, BatchAugment, dose_transform, parse_policy, policy_to_spec, single_transform
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
    assert set(feats) == set(PROBE_GROUPS) == {"pixels", "intensity", "color", "orientation", "isotropic", "layout", "random-conv",
                                               "brightness", "position", "size"}
    assert all(f.shape[0] == 20 and torch.isfinite(f).all() for f in feats.values())
    gray = probe_features(x[:, :1])
    assert "color" not in gray                                                    # no colour group for 1-channel data
    tiny = probe_features(load_dataset("digits", "test").float_images()[:5])       # 8x8 images are upsampled
    assert all(torch.isfinite(f).all() for f in tiny.values())
    # structural features ignore global brightness and contrast
    dimmer = probe_features(0.2 + 0.5 * x, groups=["orientation", "random-conv"])
    assert torch.allclose(dimmer["random-conv"], probe_features(x, groups=["random-conv"])["random-conv"], atol=1e-3)
    # ... and the brightness group reads them: the content's luma and the whole image's luma
    bright, dim = probe_features(x, groups=["brightness"])["brightness"], probe_features(0.5 * x, groups=["brightness"])["brightness"]
    assert torch.allclose(dim[:, [0, 1, 3, 4]], 0.5 * bright[:, [0, 1, 3, 4]], atol=2e-3)


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
                 "--n-test", "200", "--strengths", "0.5,1", "--encoder", "small-cnn", "--out", str(out), "--csv", str(table))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert [a["name"] for a in data["augmentations"]] == ["grayscale", "flip"]          # the single-strength verdicts (--strength 1)
    verdicts = {a["name"]: a["verdict"] for a in data["augmentations"]}
    assert verdicts == {"grayscale": "harmful", "flip": "suitable"} and data["strength"] == 1.0
    assert data["label"] == "color" and data["encoder"] == "untrained small-cnn" and data["augmentations"][0]["invariance"] is not None
    assert [c["name"] for c in data["curves"]] == ["grayscale", "flip"] and data["curves"][0]["strengths"] == [0.5, 1.0]
    assert data["curves"][0]["harmful_from"] is not None and data["curves"][1]["safe_up_to"] == 1.0
    assert parse_policy(data["recommended_policy"]).grayscale_p == 0.0 and data["verification"] == {}
    assert table.read_text().startswith("name,verdict,")
    lines = result.stdout.strip().splitlines()
    last = json.loads(lines[-1])
    assert last["verdicts"] == verdicts and last["recommended_policy"] == data["recommended_policy"]
    assert any(line.startswith("grayscale: ") and "harmful from 0.5 (p = 0.5)" in line for line in lines)


def test_cli_diagnose_verify(tmp_path):
    """--verify trains SimCLR with the recommended policy, simclr and simclr-small and reports their kNN top-1."""
    out = tmp_path / "v.json"
    result = cli("diagnose", "--dataset", "digits", "--augmentations", "crop,flip", "--strengths", "0.5,1", "--n-train", "200",
                 "--n-test", "100", "--verify", "1", "--batch-size", "32", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert set(data["verification"]) == {"recommended", "simclr", "simclr-small"}
    assert all(0.0 <= v <= 1.0 for v in data["verification"].values())
    assert "kNN top-1 after 1 s of SimCLR (digits, label): recommended " in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1])["verification"] == data["verification"]


@pytest.mark.parametrize("n_train", ["1", "5"])
def test_cli_diagnose_too_small_a_sample(tmp_path, capsys, n_train):
    from ssl_viz.cli import main

    assert main(["diagnose", "--dataset", "digits", "--n-train", n_train, "--augmentations", "flip", "--out", str(tmp_path / "x.json")]) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "too few images" in lines[0] and "at least 2 training images of every class" in lines[0], lines
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("args,message", [
    (["--dataset", "shapes", "--augmentations", "wobble"], "unknown augmentation"),
    (["--dataset", "shapes", "--strength", "2"], "--strength"),
    (["--dataset", "shapes", "--strengths", "0.5,x"], "--strengths"),
    (["--dataset", "shapes", "--strengths", "0,1"], "--strengths"),
    (["--dataset", "shapes", "--n-test", "0"], "--n-test"),
    (["--dataset", "shapes", "--verify", "-3"], "--verify"),
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


# ----------------------------------------------------------------------------- dose-response: verdicts a person would give

# shapes factor -> (augmentations that must be harmful at some strength, augmentations that must never be)
FACTOR_VERDICTS = {
    "shape": ([], ["color_jitter", "grayscale", "flip", "rotate90", "rotation"]),
    "color": (["color_jitter", "grayscale"], ["flip", "rotate90", "rotation"]),
    "orientation": (["rotation"], ["color_jitter", "grayscale"]),
    "size": (["crop"], ["color_jitter", "grayscale", "flip", "rotate90", "rotation"]),
    "position": (["flip", "rotate90", "crop"], ["color_jitter", "grayscale"]),
    "brightness": (["color_jitter"], ["grayscale", "flip", "rotate90", "rotation"]),
}
HARMFUL_DAMAGE, SAFE_DAMAGE = 0.35, 0.15      # at strength 1 / at every strength (measured: >= 0.42 / <= 0.09)
OLD_GROUPS = ["pixels", "intensity", "color", "orientation", "isotropic", "layout", "random-conv"]


@pytest.fixture(scope="module")
def shapes_doses():
    return {factor: dose_response(*small("shapes", factor), augmentations=harmful + safe)
            for factor, (harmful, safe) in FACTOR_VERDICTS.items()}


@pytest.mark.parametrize("factor", list(FACTOR_VERDICTS))
def test_dose_response_verdicts_per_shapes_factor(shapes_doses, factor):
    resp = shapes_doses[factor]
    harmful, safe = FACTOR_VERDICTS[factor]
    assert resp.label == factor and resp.strengths == list(STRENGTHS) and resp.probe_clean > 0.75   # circles have no orientation
    for name in harmful:
        c = resp.curve(name)
        assert c.harmful_from is not None, c.summary
        assert c.label_damage[-1] >= HARMFUL_DAMAGE and c.verdicts[-1] == "harmful", (c.summary, c.label_damage)
        assert f"harmful from {c.harmful_from:g} ({c.settings[c.strengths.index(c.harmful_from)]})" in c.summary
    for name in safe:
        c = resp.curve(name)
        assert c.harmful_from is None and c.safe_up_to == 1.0, c.summary
        assert max(c.label_damage) <= SAFE_DAMAGE, (name, c.label_damage)
    assert {c.name for c in resp.curves} == set(harmful + safe)


def test_damage_grows_with_the_dose(shapes_doses):
    """Crops of shrinking area change the size label more and more; grayscale at probability p erases colour in p of the images."""
    crop = shapes_doses["size"].curve("crop")
    assert crop.label_damage[0] <= SAFE_DAMAGE < crop.label_damage[-1] and crop.label_damage[-1] == max(crop.label_damage)
    assert crop.settings[0] == "crop to 84% of the area" and crop.kind == "magnitude" and crop.safe_up_to < 1.0
    gray = shapes_doses["color"].curve("grayscale")
    assert gray.kind == "probability" and gray.settings == [f"p = {p:g}" for p in STRENGTHS]
    assert gray.label_damage[0] < gray.label_damage[2] < gray.label_damage[4]
    assert 0.2 <= gray.harmful_from <= 0.6


def test_a_probe_without_the_new_groups_misjudges_brightness(shapes_doses):
    """Without absolute luma features the probe reads the brightness label from side cues (the colours' saturation,
    the background): it reads the label worse, and grayscale or rotation come out damaging, which a person would not say."""
    harmful, safe = FACTOR_VERDICTS["brightness"]
    old = dose_response(*small("shapes", "brightness"), augmentations=harmful + safe, candidate_groups=OLD_GROUPS)
    assert "brightness" not in old.probe_groups and old.probe_clean < shapes_doses["brightness"].probe_clean - 0.1
    wrong = [n for n in safe if old.curve(n).harmful_from is not None or max(old.curve(n).label_damage) > SAFE_DAMAGE]
    assert wrong, "the per-factor test would not catch a probe without the brightness group"


def test_textures_dose_response():
    orient = dose_response(*small("textures", "orientation"), augmentations=["rotation", "rotate90", "color_jitter"])
    source = dose_response(*small("textures", "source"), augmentations=["rotation", "rotate90", "flip"])
    for name in ("rotation", "rotate90"):
        assert orient.curve(name).harmful_from is not None and orient.curve(name).label_damage[-1] >= 0.6
        assert source.curve(name).harmful_from is None and max(source.curve(name).label_damage) <= SAFE_DAMAGE
    assert orient.curve("rotation").harmful_from == 0.2                # 4 classes 45 degrees apart: +-36 degrees already mixes them
    assert orient.curve("color_jitter").safe_up_to == 1.0 and source.curve("flip").safe_up_to == 1.0
    assert parse_policy(orient.recommended_policy).rotate90_p == 0.0
    assert parse_policy(source.recommended_policy).rotate90_p == 0.5   # safe at p = 1: in at its usual probability


def test_fashion_mnist_keeps_crop_and_jitter():
    """The issue's reality check: training says crops to 50-65% and strong jitter help on Fashion-MNIST."""
    tr, te = load_dataset("fashion-mnist", "train").head(N_TRAIN), load_dataset("fashion-mnist", "test").head(N_TEST)
    resp = dose_response(tr, te, augmentations=["crop", "color_jitter", "rotation"])
    policy = parse_policy(resp.recommended_policy)
    assert resp.curve("crop").harmful_from is None or resp.curve("crop").harmful_from >= 0.8
    assert 0.4 <= policy.crop_scale[0] <= 0.7 and policy.crop_scale[1] == 1.0
    assert policy.jitter_p == 0.8 and policy.jitter_strength >= 0.6
    assert policy.rotation_degrees == 0.0                               # free rotation is measured, not recommended


# ----------------------------------------------------------------------------- the recommended policy


def _curve(name, damages, change=0.5):
    from ssl_viz.analysis.diagnosis import AugmentationReport, Thresholds, curve_from_reports

    t = Thresholds()
    reports = [AugmentationReport(name, judge(name, change, 0.9, 0.9, 0.9, d)[0], "", change, 0.9, 0.9, 0.9, d, d, d)
               for d in damages]
    return curve_from_reports(name, list(STRENGTHS), reports, t)


def test_curve_summary_and_bounds():
    c = _curve("crop", [0.0, 0.05, 0.15, 0.35, 0.8])
    assert (c.safe_up_to, c.harmful_from) == (0.6, 0.8) and c.verdicts == ["suitable", "suitable", "neutral", "harmful", "harmful"]
    assert c.summary == "crop: safe up to strength 0.6 (crop to 52% of the area), harmful from 0.8 (crop to 36% of the area)"
    assert _curve("flip", [0.0] * 5).summary == "flip: safe at every strength, up to 1 (p = 1)"
    assert _curve("grayscale", [0.0] * 5, change=0.0).summary == "grayscale: changes (almost) nothing in these images at any strength"
    never = _curve("rotation", [0.25, 0.25, 0.28, 0.29, 0.29])
    assert never.safe_up_to is None and never.harmful_from is None
    assert never.summary == "rotation: not safe even at strength 0.2 (rotate up to ±36°), never harmful"
    assert _curve("blur", [0.0, 0.5, 0.0, 0.0, 0.0]).safe_up_to == 0.2           # safe only up to the first unsafe dose


def test_recommend_policy_rules():
    curves = [_curve("crop", [0.0, 0.05, 0.15, 0.35, 0.8]), _curve("color_jitter", [0.0, 0.0, 0.05, 0.1, 0.12]),
              _curve("flip", [0.0] * 5), _curve("rotate90", [0.0, 0.1, 0.2, 0.25, 0.3]), _curve("grayscale", [0.0] * 5, change=0.0),
              _curve("solarize", [0.1, 0.5, 0.5, 0.5, 0.5]), _curve("blur", [0.0] * 5), _curve("rotation", [0.0] * 5),
              _curve("cutout", [0.0] * 5), _curve("jigsaw", [0.0] * 5)]
    cfg = recommend_policy(curves)
    assert cfg.crop_scale == (0.52, 1.0) and cfg.jitter_p == 0.8 and cfg.jitter_strength == 1.0
    assert cfg.flip_p == 0.5 and cfg.rotate90_p == 0.0          # rotate90 is not safe at p = 1
    assert cfg.grayscale_p == 0.0                               # changes nothing here (already gray)
    assert cfg.solarize_p == 0.2 and cfg.solarize_threshold == 0.9
    assert cfg.blur_p == 0.0 and cfg.rotation_degrees == 0.0 and cfg.cutout_p == 0.0 and cfg.jigsaw_p == 0.0
    big = recommend_policy(curves, image_size=96, extras=["rotation", "cutout"])
    assert big.blur_p == 0.5 and big.blur_sigma == (0.1, 2.0) and big.rotation_degrees == 180.0
    assert big.cutout_p == 0.5 and big.cutout_scale == (0.02, 0.25) and big.jigsaw_p == 0.0
    spec = policy_to_spec(cfg)
    assert parse_policy(spec) == cfg and "0.52:1.0" in spec
    assert big.crop_scale == (0.52, 1.0)                        # no floor above 32 px


def test_recommended_crop_is_floored_for_small_images():
    """Up to 32 px a crop that turns harmful keeps at least simclr-small's 65 % of the area; a gentler safe crop stays
    gentler, and a crop harmful at no strength (stationary textures) keeps its whole safe range."""
    from ssl_viz.analysis.diagnosis.recommend import SMALL_IMAGE_CROP_FLOOR

    assert SMALL_IMAGE_CROP_FLOOR == POLICIES["simclr-small"].crop_scale[0] == 0.65
    strong = [_curve("crop", [0.0, 0.05, 0.15, 0.35, 0.8])]             # safe up to 0.6: crop to 52 %
    assert recommend_policy(strong, image_size=28).crop_scale == (0.65, 1.0)
    assert recommend_policy(strong, image_size=32).crop_scale == (0.65, 1.0)
    assert recommend_policy(strong, image_size=33).crop_scale == (0.52, 1.0)
    gentle = [_curve("crop", [0.05, 0.25, 0.4, 0.6, 0.8])]              # safe only at 0.2: crop to 84 %
    assert recommend_policy(gentle, image_size=28).crop_scale == (0.84, 1.0)
    unsafe = [_curve("crop", [0.5] * 5)]
    assert recommend_policy(unsafe, image_size=28).crop_scale == (1.0, 1.0)   # never safe: no crop at all
    never_harmful = [_curve("crop", [0.0, 0.05, 0.1, 0.15, 0.2])]       # safe at every strength: crop to 20 %
    assert never_harmful[0].harmful_from is None
    assert recommend_policy(never_harmful, image_size=28).crop_scale == (0.2, 1.0)


def test_recommended_policy_parses_and_trains(tmp_path, shapes_doses):
    from ssl_viz.sweeps import run_verification, sweep_config, verification_configs

    spec = shapes_doses["color"].recommended_policy
    cfg = parse_policy(spec)
    assert cfg.grayscale_p == 0.0 and cfg.flip_p == 0.5 and cfg.rotate90_p == 0.5   # grayscale erases colour; geometry keeps it
    assert cfg.jitter_p == 0.0 or cfg.jitter_strength < 1.0                           # strong hue jitter is not safe
    configs = verification_configs(sweep_config("shapes", "color", "simclr"), spec, budget=30)
    assert list(configs) == ["recommended", "simclr", "simclr-small"] and all(c.time_budget == 30 for c in configs.values())
    assert [c.augment for c in configs.values()] == [spec, "simclr", "simclr-small"]
    assert configs["simclr"].batch_size == TrainConfig().batch_size and configs["simclr"].lr == TrainConfig().lr and configs["simclr"].knn_every == 0
    with pytest.raises(ValueError, match="unknown augmentation"):
        verification_configs(configs["simclr"], "simclr+wobble=1", 30)
    tr, te = load_dataset("shapes", "train", label="color", n=N_TRAIN).head(128), load_dataset("shapes", "test", label="color", n=N_TEST)
    base = TrainConfig(method="simclr", encoder="small-cnn", encoder_width=8, dataset="shapes", dataset_label="color", batch_size=32,
                       knn_every=0, device="cpu")
    accs = run_verification(base, spec, tr, te.head(64), budget=1.0, run_root=tmp_path)
    assert list(accs) == ["recommended", "simclr", "simclr-small"] and all(0.0 <= v <= 1.0 for v in accs.values())
    assert parse_policy(json.loads((tmp_path / "recommended" / "config.json").read_text())["augment"]) == cfg


def test_launch_verification_and_results(tmp_path, monkeypatch, tiny_model_dir):
    import shutil

    from ssl_viz import jobs
    from ssl_viz.sweeps import launch_verification, verification_results

    started = []

    def fake_start_run(cfg, root=None):
        jobs.validate_config(cfg)
        started.append(cfg)
        d = tmp_path / f"run{len(started)}"
        d.mkdir()
        return d

    monkeypatch.setattr(jobs, "start_run", fake_start_run)
    base = TrainConfig(method="simclr", encoder="small-cnn", encoder_width=8, dataset="digits", knn_every=0)
    manifest = launch_verification(base, "none+crop_scale=0.6:1.0,flip_p=0.5", budget=5, manifest=tmp_path / "v.json")
    assert [c.augment for c in started] == ["none+crop_scale=0.6:1.0,flip_p=0.5", "simclr", "simclr-small"]
    assert all(c.time_budget == 5 for c in started)
    states, knn = verification_results(manifest)
    assert set(states) == {"recommended", "simclr", "simclr-small"} and set(knn.values()) == {None}
    run = Path(json.loads(manifest.read_text())["runs"]["simclr"])
    for f in tiny_model_dir.iterdir():                      # the simclr run "finished": a real checkpoint
        shutil.copy(f, run / f.name)
    (run / "status.json").write_text(json.dumps({"state": "done"}))
    tr, te = load_dataset("digits", "train").head(200), load_dataset("digits", "test").head(100)
    states, knn = verification_results(manifest, tr, te)
    assert states["simclr"] == "done" and 0.0 <= knn["simclr"] <= 1.0 and knn["recommended"] is None
    assert json.loads(manifest.read_text())["knn_top1"]["simclr"] == knn["simclr"]      # stored: the next call is cheap
    from ssl_viz.rundir import CHECKPOINT

    (run / CHECKPOINT).unlink()                            # not read again
    assert verification_results(manifest)[1]["simclr"] == knn["simclr"]
    with pytest.raises(FileNotFoundError):
        verification_results(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- dose-response data, figure, strip, batching


def test_dose_response_with_an_encoder_is_strict_json():
    from ssl_viz.encoders import build_encoder

    tr, te = load_dataset("digits", "train").head(200), load_dataset("digits", "test").head(100)
    encoder = build_encoder("small-cnn", in_channels=1, width=8).eval()
    seen = []
    resp = dose_response(tr, te, encoder, ["flip", "crop"], strengths=[1.0, 0.5], encoder_name="tiny",
                         progress=lambda f, t: seen.append((f, t)))
    assert seen[0][0] == 0.0 and seen[-1] == (1.0, "Done") and any("crop to 60% of the area" in t for _, t in seen)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    assert resp.strengths == [0.5, 1.0] and resp.knn_top1 is not None
    assert all(v is not None and -1.0 <= v <= 1.0 for c in resp.curves for v in c.invariance)

    def no_constants(name):
        raise AssertionError(f"{name} in strict JSON")

    data = json.loads(resp.to_json(), parse_constant=no_constants)
    assert data["recommended_policy"] == resp.recommended_policy and data["encoder"] == "tiny"
    crop = data["curves"][1]
    assert crop["name"] == "crop" and crop["settings"] == ["crop to 60% of the area", "crop to 20% of the area"]
    assert set(crop) >= {"kind", "strengths", "label_damage", "image_change", "invariance", "verdicts", "safe_up_to",
                         "harmful_from", "summary", "reports"}
    single = resp.at(1.0)
    assert single.strength == 1.0 and [a.name for a in single.augmentations] == ["flip", "crop"]
    assert single.get("crop").label_damage == resp.curve("crop").label_damage[1]
    with pytest.raises(KeyError):
        resp.at(0.3)
    fig = dose_figure(resp)
    assert [t.name for t in fig.data] == ["flip", "crop"] and list(fig.data[1].x) == [0.5, 1.0]


def test_probe_bench_batches_give_the_same_numbers():
    tr, te = small("shapes", "position")
    whole, pieces = ProbeBench(tr, te), ProbeBench(tr, te, batch_size=64)
    assert whole.probe.groups_ == pieces.probe.groups_ and whole.acc_clean == pieces.acc_clean
    assert torch.allclose(whole.X_tr, pieces.X_tr, atol=1e-5)
    cfg = dose_transform("flip", 0.4)
    a, b = whole.measure("flip", cfg), pieces.measure("flip", cfg)
    assert a.image_change == pytest.approx(b.image_change, rel=0.2) and 0.0 < a.image_change


def test_position_and_size_features_read_the_content():
    x = torch.full((2, 3, 32, 32), 0.1)
    x[0, :, 2:10, 4:12] = 0.8                               # 8x8 square top-left
    x[1, :, 16:32, 16:32] = 0.8                             # 16x16 square bottom-right
    f = probe_features(x, groups=["position", "size"])
    cx, cy = f["position"][:, 0], f["position"][:, 1]
    assert cx[0] < -0.3 and cy[0] < -0.3 and cx[1] > 0.3 and cy[1] > 0.3
    assert f["position"][0, 2] == pytest.approx(1.0) and f["position"][1, 5] == pytest.approx(1.0)   # all in one quadrant
    assert f["size"][:, 0].tolist() == pytest.approx([64 / 1024, 256 / 1024])


def test_example_strip():
    ds = load_dataset("shapes", "test", label="color", n=100)
    before, after, captions = example_strip(ds, "grayscale", 1.0, per_class=2)
    assert before.shape == after.shape == (8, 64, 64, 3) and before.dtype == after.dtype == np.uint8
    assert captions == [c for c in ds.class_names for _ in range(2)]
    assert np.abs(after[..., 0].astype(int) - after[..., 1]).max() <= 1 and (before[..., 0] != before[..., 1]).any()
    digits = load_dataset("digits", "test")
    b, a, caps = example_strip(digits, "crop", 0.5, per_class=1, seed=3)
    assert b.shape == (10, 64, 64, 3) and len(caps) == 10 and not np.array_equal(a, b)
    with pytest.raises(ValueError, match="strength"):
        example_strip(digits, "crop", 1.5)


def test_dose_transform_and_solarize_threshold():
    for name in ("flip", "grayscale", "rotate90"):
        field = {"flip": "flip_p", "grayscale": "grayscale_p", "rotate90": "rotate90_p"}[name]
        assert getattr(dose_transform(name, 0.4), field) == 0.4 and dose_transform(name, 1.0) == single_transform(name)
    assert dose_transform("crop", 0.5) == single_transform("crop", 0.5)
    assert single_transform("solarize").solarize_threshold == 0.5 and dose_transform("solarize", 0.2).solarize_threshold == pytest.approx(0.9)
    x = torch.linspace(0, 1, 11).view(1, 1, 1, 11)
    y = BatchAugment(dose_transform("solarize", 0.2))(x, torch.Generator().manual_seed(0))
    assert torch.allclose(y[x >= 0.9], 1 - x[x >= 0.9]) and torch.equal(y[x < 0.89], x[x < 0.89])
    cfg = parse_policy("none+solarize_p=1.0,solarize_threshold=0.8")
    assert cfg.solarize_threshold == 0.8 and parse_policy(policy_to_spec(cfg)) == cfg
    with pytest.raises(ValueError, match="solarize_threshold"):
        parse_policy("none+solarize_threshold=1.5")
    with pytest.raises(ValueError, match="strength"):
        dose_transform("flip", 0.0)
