"""Benchmarks run end to end on tiny sizes (no timings asserted), and the zoo's train -> evaluate -> ship pipeline."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import retrieval, time_to_quality, train_throughput
from bench.recipe_search import build_config, grid_cpu300
from ssl_viz import zoo
from ssl_viz.checkpoint import load_model, read_state_dict

ROOT = Path(__file__).resolve().parents[1]


def test_train_throughput_paths_all_train_the_same_model():
    rates = train_throughput.measure("small-cnn", 4, 16, torch.device("cpu"), min_time=0.01, workers=0, dataset="digits", n_images=128)
    assert set(rates) == {"trainer", "plain", "plain+channels_last", "PIL per-image"}
    assert all(np.isfinite(v) and v > 0 for v in rates.values())


def test_plain_simclr_step_lowers_its_loss():
    from ssl_viz.data import load_dataset

    data = load_dataset("digits", "train").head(256, seed=0)
    torch.manual_seed(0)
    step = train_throughput.plain_step(data, "small-cnn", 8, 64, torch.device("cpu"), lr=3e-3)
    losses = [float(step()) for _ in range(60)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.1, losses


def test_retrieval_bench_measures_each_gallery():
    r = retrieval.measure(2000, 16, repeats=1)
    assert r["n"] == 2000 and r["one_query_ms"] > 0 and r["per_query_in_batch_ms"] > 0


def test_recipe_search_steps_follow_the_cpu_rate():
    cands = {c["name"]: c for c in grid_cpu300()}
    cfg16, steps16 = build_config(cands["simclr-small-cnn16-lr0.008"], 300, 60_000)
    cfg32, steps32 = build_config(cands["simclr-small-cnn32-lr0.008"], 300, 60_000)
    assert steps16 > 2 * steps32 and cfg16.lr == 8e-3 and cfg16.knn_every == 0
    cfg_t, _ = build_config(cands["simclr-sc16-t0.5"], 300, 60_000)
    assert cfg_t.method_cfg.temperature == 0.5 and cfg_t.encoder_width == 16


def test_time_to_quality_reads_full_protocol_points_only(tmp_path):
    run = tmp_path / "simclr-fashion-mnist"
    run.mkdir()
    (run / "card.json").write_text(json.dumps({"method": "simclr", "encoder": "small-cnn", "device": "cpu", "seconds": 300.0, "steps": 10,
                                               "images_seen": 2560, "evaluation": {"knn_top1": 0.86, "linear_top1": 0.88,
                                                                                   "alignment": 0.5, "uniformity": -2.0}}))
    records = [{"step": 5, "time": 100.0, "knn_top1": 0.9, "knn_n_test": 2000},       # a subset point: not the protocol
               {"step": 5, "time": 100.0, "knn_top1": 0.84, "knn_n_test": 10000},
               {"step": 10, "time": 200.0, "knn_top1": 0.86, "knn_n_test": 10000}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    rows = time_to_quality.collect(tmp_path)
    assert rows[0]["curve"] == [(100.0, 0.84), (200.0, 0.86)]
    assert time_to_quality.first_reaching(rows[0]["curve"], 0.85) == 200.0
    assert "| simclr-fashion-mnist |" in time_to_quality.markdown(rows, 0.85) and "200 s" in time_to_quality.markdown(rows, 0.85)


def test_zoo_entry_trains_evaluates_and_ships(tmp_path):
    entry = zoo.ZooEntry("moco-digits", ("--method", "moco", "--encoder", "small-cnn", "--width", "8", "--batch-size", "64", "--queue-size", "256"),
                         budget=3, dataset="digits", half=True, knn_every=5)
    result = zoo.build(entry, tmp_path)
    run = tmp_path / "moco-digits"
    card = json.loads((run / "card.json").read_text())
    assert 0.0 <= result["knn_top1"] <= 1.0 and card["evaluation"]["knn_top1"] == result["knn_top1"]
    assert card["metrics"]["linear_top1"] == card["evaluation"]["linear_top1"]
    assert card["command"].startswith("python -m ssl_viz train --dataset digits --method moco") and "models/moco-digits" in card["command"]
    assert not (run / "trainer_state.pt").exists() and not (tmp_path / ".moco-digits.building").exists()
    assert all(k.startswith(("encoder.", "projector.")) for k in read_state_dict(run / "checkpoint.safetensors"))
    full = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "knn_top1" in line]
    assert full and all(r["knn_n_test"] == card["evaluation"]["n_test"] for r in full)  # the monitor ran the full protocol
    assert load_model(run).encoder.first_conv().weight.dtype == torch.float32


def test_zoo_cli_lists_and_refuses_unknown_entries():
    out = subprocess.run([sys.executable, "-m", "ssl_viz.zoo", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "simclr-fashion-mnist: -m ssl_viz train" in out.stdout and "--knn-samples 0" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "ssl_viz.zoo", "--only", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown zoo entries" in bad.stderr


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_shipped_zoo_models_load_and_carry_their_evaluation(name):
    run = ROOT / "models" / name
    if not (run / "card.json").exists():
        pytest.skip(f"{name} not built yet (make models)")
    card = json.loads((run / "card.json").read_text())
    assert {"knn_top1", "linear_top1", "alignment", "uniformity"} <= set(card["evaluation"])
    assert card["seconds"] > 0 and card["command"].startswith("python -m ssl_viz train")
    assert (run / "checkpoint.safetensors").stat().st_size < 8 * 2**20
    load_model(run)
    assert f"| `{name}` | {card['method']} |" in zoo.markdown_table(ROOT / "models")


def test_the_report_keeps_the_sections_of_the_separate_benchmarks(tmp_path, monkeypatch):
    """`make bench` rewrites its own sections and keeps the ones the long, separate benchmarks wrote (classroom,
    memory, diagnosis, image store), also when it writes partial results as it goes."""
    from bench import report

    out = tmp_path / "RESULTS.md"
    out.write_text("# ssl-viz benchmark results\n\n## Retrieval (CPU)\n\nold\n\n## Classroom: 20 browser sessions on one server\n\nkept figures\n")
    monkeypatch.setattr(report, "SECTIONS", ("retrieval",))
    monkeypatch.setattr(report, "section_retrieval", lambda: "new figures")
    monkeypatch.setattr(report, "section_machine", lambda only=None: "machine")
    monkeypatch.setattr(sys, "argv", ["report", "--out", str(out)])
    report.main()
    sections = report.previous_sections(out)
    assert sections["Retrieval (CPU)"] == "new figures"
    assert sections["Classroom: 20 browser sessions on one server"] == "kept figures"


def test_a_partial_report_says_which_sections_it_reran():
    from bench import report

    assert "reran recipes, time only" in report.section_machine({"time", "recipes"})
    assert "kept from earlier" not in report.section_machine(set())
