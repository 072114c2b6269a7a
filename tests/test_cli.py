"""The command line: train, embed, evaluate; bad arguments end with one line and exit 2."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ssl_viz", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args,message", [
    (["train", "--method", "nope", "--dataset", "digits"], "unknown method"),
    (["train", "--encoder", "resnet1000", "--dataset", "digits"], "unknown encoder"),
    (["train", "--dataset", "imagenet-22k"], "unknown dataset"),
    (["train", "--dataset", "digits", "--augment", "wobble"], "wobble"),
    (["train", "--dataset", "folder:/no/such/folder", "--epochs", "1"], "folder"),
    (["evaluate", "--checkpoint", "/no/such/run", "--dataset", "digits"], "no model"),
    (["evaluate", "--checkpoint", "pyproject.toml", "--dataset", "digits"], "encoder"),
    (["evaluate", "--checkpoint", "pyproject.toml", "--encoder", "resnet18", "--dataset", "digits"], "weights_only"),
    (["train", "--resume", "/no/such/run"], "config.json"),
])
def test_bad_arguments_exit_2_with_one_line(args, message):
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message.lower() in lines[0].lower()


def test_train_evaluate_embed_round_trip(tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--method", "simclr", "--encoder", "small-cnn", "--width", "8", "--dataset", "digits",
                 "--epochs", "1", "--batch-size", "64", "--knn-every", "0", "--out", str(run), "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["stop"] == "done"
    assert "python -m ssl_viz train" in json.loads((run / "card.json").read_text())["command"]

    result = cli("evaluate", "--checkpoint", str(run), "--dataset", "digits")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"knn_top1", "linear_top1", "alignment", "uniformity"} <= set(metrics)
    assert 0.3 < metrics["knn_top1"] <= 1.0  # digits features are informative even after one epoch

    out = tmp_path / "emb.npz"
    result = cli("embed", "--checkpoint", str(run), "--dataset", "digits", "--out", str(out), "--representation", "projector")
    assert result.returncode == 0, result.stderr
    data = np.load(out)
    assert data["embeddings"].shape == (449, 128) and data["labels"].shape == (449,)
