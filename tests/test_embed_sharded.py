"""``embed`` under torchrun: two gloo processes on the CPU shard the rows and write the one file one process writes."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_viz.evaluate import shard_rows

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, env, timeout=120):
    """``cmd`` in its own session, killed with its children (and the test failed) if it outlives ``timeout``."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"{cmd[:6]} did not finish within {timeout} s (a rank left waiting?)") from None
    return proc.returncode, out, err


@pytest.fixture()
def image_folder(tmp_path):
    """13 grayscale noise images (7 cat, 6 dog: 13 rows do not split evenly over 2 ranks) and one non-image file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for cls, count in (("cat", 7), ("dog", 6)):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / cls / f"{cls}{i}.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("n,world", [(13, 2), (1, 3), (10, 4), (0, 2), (7, 1)])
def test_shards_are_contiguous_in_order_and_differ_by_at_most_one(n, world):
    slices = [shard_rows(n, r, world) for r in range(world)]
    assert [list(range(n))[s] for s in slices] == [list(a) for a in np.array_split(np.arange(n), world)]


def test_two_processes_write_what_one_process_writes(tmp_path, tiny_model_dir, image_folder):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "SSL_VIZ_CACHE": str(tmp_path / "cache")}
    args = ["embed", "--checkpoint", str(tiny_model_dir), "--dataset", f"folder:{image_folder}", "--device", "cpu"]
    two, one = tmp_path / "two", tmp_path / "one"
    # two processes first, on an empty cache: rank 0 builds the folder's image store, rank 1 opens it
    code, out, err = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                          f"--master_port={free_port()}", "-m", "ssl_viz", *args, "--out", str(two / "emb.npz")], env)
    assert code == 0, err[-3000:]
    assert out.count('"out"') == 1, out  # one JSON line: rank 0's
    code, _, err = run([sys.executable, "-m", "ssl_viz", *args, "--out", str(one / "emb.npz")], env)
    assert code == 0, err[-3000:]

    assert sorted(os.listdir(two)) == sorted(os.listdir(one)) == ["emb.npz", "emb.npz.skipped.tsv"]  # no temp or per-rank files
    assert (two / "emb.npz.skipped.tsv").read_text() == (one / "emb.npz.skipped.tsv").read_text()
    a, b = np.load(two / "emb.npz"), np.load(one / "emb.npz")
    assert sorted(a.files) == sorted(b.files) == ["embeddings", "labels", "names", "split"]
    assert a["embeddings"].shape == b["embeddings"].shape == (13, a["embeddings"].shape[1])
    assert a["embeddings"].dtype == b["embeddings"].dtype == np.float32
    np.testing.assert_allclose(a["embeddings"], b["embeddings"], atol=1e-5, rtol=0)
    assert a["labels"].tolist() == b["labels"].tolist() and sorted(set(a["labels"].tolist())) == [0, 1]
    assert a["names"].tolist() == b["names"].tolist() and len(set(a["names"].tolist())) == 13
    assert str(a["split"]) == str(b["split"]) == "all"


def test_an_error_on_one_rank_ends_every_rank_with_one_line_and_status_2(tmp_path, tiny_model_dir):
    """Rank 0 loads the dataset first (the others wait for it): its error reaches every rank, none is left waiting."""
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "SSL_VIZ_CACHE": str(tmp_path / "cache"),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        cmd = [sys.executable, "-m", "ssl_viz", "embed", "--checkpoint", str(tiny_model_dir), "--dataset",
               f"folder:{tmp_path / 'no-such-folder'}", "--device", "cpu", "--out", str(tmp_path / "emb.npz")]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True))
    results = []
    try:
        for proc in procs:
            results.append((proc.wait(timeout=120), proc.stderr.read()))
    except subprocess.TimeoutExpired:
        raise AssertionError("a rank did not finish within 120 s (left waiting in a collective?)") from None
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    for code, err in results:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("error: folder:") and "does not exist" in lines[0], err
    assert not (tmp_path / "emb.npz").exists()
