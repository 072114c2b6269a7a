"""Faults: a run killed in the middle of writing a checkpoint, a full disk, a restarted app, a bounded cache.

The kills are real (``os._exit`` inside the writer, in a separate process, so nothing is cleaned up);
the full disk is simulated by raising ENOSPC inside the write callback, and is real on a tiny tmpfs
where this machine allows mounting one.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_viz.cache import cached_arrays, key_hash, prune
from ssl_viz.checkpoint import CARD, CHECKPOINT, TRAINER_STATE, load_model, read_state_dict, save_state
from ssl_viz.config import TrainConfig
from ssl_viz.fileio import atomic_write, atomic_write_text, read_json, remove_orphan_temps
from ssl_viz.train import Checkpointer, MetricsLog, Trainer, load_config

ROOT = Path(__file__).resolve().parent.parent
# 320 digits / batch 64 = 5 steps per epoch; a checkpoint after every step
TRAIN_ARGS = ["train", "--method", "simclr", "--encoder", "small-cnn", "--width", "8", "--dataset", "digits", "--max-train-images", "320",
              "--epochs", "1", "--batch-size", "64", "--knn-every", "0", "--log-every", "1", "--checkpoint-every", "0", "--quiet"]
TOTAL = 5
KILL_AT = 3  # the third save of that file dies

KILL_SCRIPT = r"""
# One process imports torch and loads the data once, then forks a child per kill point (no torch thread has started yet).
import json, os, sys
from pathlib import Path
import torch, safetensors.torch
import ssl_viz.checkpoint.run as ckpt  # save_run writes the card through this module's atomic_write_json
import ssl_viz.fileio as sio
from ssl_viz.cli import main
from ssl_viz.data import load_dataset

torch.set_num_threads(1)
load_dataset("digits", "train")
at, root, wheres, args = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(","), sys.argv[4:]
calls = {"n": 0}

def die_after_partial(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:  # a torn write: half the bytes reached the disk
        fh.truncate(size // 2)
    os._exit(137)

def hit(path, name):
    if Path(str(path)).name.startswith(f".{name}.") or Path(str(path)).name == name:
        calls["n"] += 1
        return calls["n"] == at
    return False

def install(where):
    if where == "checkpoint":              # inside safetensors' save_file, into the temp file
        orig = safetensors.torch.save_file
        def save_file(tensors, filename, metadata=None):
            orig(tensors, filename, metadata=metadata)
            if hit(filename, "checkpoint.safetensors"):
                die_after_partial(filename)
        safetensors.torch.save_file = save_file
    elif where == "trainer_state":         # inside torch.save of the optimiser state
        orig_save = torch.save
        def save(obj, f, *a, **k):
            orig_save(obj, f, *a, **k)
            if hit(f, "trainer_state.pt"):
                die_after_partial(f)
        torch.save = save
    elif where == "rename":                # the temp file is complete, the rename never happens
        orig_replace = os.replace
        class OsProxy:
            def __getattr__(self, name):
                return getattr(os, name)
            def replace(self, src, dst):
                if hit(dst, "checkpoint.safetensors"):
                    os._exit(137)
                return orig_replace(src, dst)
        sio.os = OsProxy()
    elif where == "card":                  # the last file of a save: the model card
        orig_json = ckpt.atomic_write_json
        def atomic_write_json(path, obj):
            if hit(path, "card.json"):
                (Path(path).parent / f".card.json.{os.getpid()}.x.tmp").write_text(json.dumps(obj)[:40])
                os._exit(137)
            return orig_json(path, obj)
        ckpt.atomic_write_json = atomic_write_json

codes = {}
for where in wheres:
    pid = os.fork()
    if pid == 0:
        install(where)
        os._exit(main(args + ["--out", str(root / where)]))
    codes[where] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(codes))
"""


def consistent_files(run: Path) -> dict:
    """Every file of the run reads completely; returns the card."""
    assert set(read_state_dict(run / CHECKPOINT))
    assert set(torch.load(run / TRAINER_STATE, weights_only=True)) == {"optimizer", "loop"}
    for name in ("config.json", CARD, "status.json"):
        assert isinstance(json.loads((run / name).read_text()), dict), name
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
    return json.loads((run / CARD).read_text())


def resume_to_the_end(run: Path) -> None:
    """Resume as ``train --resume`` does (status, metrics and checkpoint callbacks; the kNN monitor is off in these runs)."""
    cfg = load_config(run)
    state = Trainer.from_config(cfg, run, callbacks=[MetricsLog(cfg.log_every), Checkpointer(cfg.checkpoint_every)]).fit(resume=True)
    assert state.stop_reason == "done" and state.step == TOTAL
    assert consistent_files(run)["steps"] == TOTAL and read_json(run / "status.json")["state"] == "done"
    assert torch.isfinite(load_model(run).encoder(torch.rand(2, 1, 8, 8))).all()


def test_killed_during_a_checkpoint_write_resumes_with_no_corrupt_file(tmp_path):
    """Killed (os._exit) inside the checkpoint write, the optimiser-state write, before the rename, and inside the
    model-card write: the previous save stays whole and loadable, and the run resumes to its end."""
    # save 1 holds the starting weights (step 0), so save k holds step k - 1
    where_steps = {"checkpoint": KILL_AT - 2, "trainer_state": KILL_AT - 2, "rename": KILL_AT - 2, "card": KILL_AT - 2}
    result = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(KILL_AT), str(tmp_path), ",".join(where_steps), *TRAIN_ARGS], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    codes = json.loads(result.stdout.strip().splitlines()[-1])
    assert codes == dict.fromkeys(where_steps, 137), (codes, result.stderr[-3000:])
    lines = []
    for where, steps in where_steps.items():
        run = tmp_path / where
        card = consistent_files(run)
        assert card["steps"] == steps, where  # the save before the kill
        assert load_model(run).card["steps"] == steps
        temps = [p.name for p in run.glob(".*.tmp")]
        assert all(p.startswith(".") for p in temps)  # a torn temp may remain: never under the real name
        lines.append(f"killed in {where} write at save {KILL_AT}: previous checkpoint (step {steps}) loads; {len(temps)} orphan temp")
        for tmp in run.glob(".*.tmp"):  # the killed writer's pid is gone: the next write of that file removes its temp
            os.utime(tmp, (time.time() - 120, time.time() - 120))
        resume_to_the_end(run)
        assert not list(run.glob(".*.tmp")), list(run.glob(".*.tmp"))
    print("\n" + "\n".join(lines))


def test_atomic_write_disk_full_keeps_the_previous_file(tmp_path):
    target = tmp_path / "state.bin"
    target.write_bytes(b"previous")

    def full(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(b"half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        atomic_write(target, full)
    assert info.value.errno == errno.ENOSPC
    assert "no space left on device while writing state.bin; the previous state.bin (if any) is unchanged" in str(info.value)
    assert info.value.filename == str(target)
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["state.bin"]

    # libraries that do not raise OSError: safetensors ("os error 28"), torch.save ("unexpected pos" on a full disk)
    def safetensors_full(tmp: str) -> None:
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(OSError, match="no space left"):
        atomic_write(target, safetensors_full)

    def other_error(tmp: str) -> None:
        raise ValueError("a bug, not a full disk")

    with pytest.raises(ValueError, match="a bug"):
        atomic_write(target, other_error)
    assert target.read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1


def test_disk_full_during_training_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """The third checkpoint write hits ENOSPC half-way: a clear OSError, the second checkpoint intact, resume works once space is back."""
    import safetensors.torch

    cfg = TrainConfig(method="simclr", encoder="small-cnn", encoder_width=8, dataset="digits", max_train_images=320, epochs=1,
                      batch_size=64, knn_every=0, checkpoint_every=0.0)
    run = tmp_path / "run"
    orig, saved = safetensors.torch.save_file, []

    def filling_disk(tensors, filename, metadata=None):
        if len(saved) == 2:
            with open(filename, "wb") as fh:
                fh.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        saved.append({k: v.clone() for k, v in tensors.items()})
        return orig(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", filling_disk)
    state = Trainer.from_config(cfg, run, callbacks=[MetricsLog(1), Checkpointer(0.0)]).fit()
    assert state.stop_reason.startswith("failed: no space left on device while writing checkpoint.safetensors; the previous")
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "no space left" in status["reason"]  # not left "running"
    print(f"\ndisk full: {state.stop_reason}")
    state = read_state_dict(run / CHECKPOINT)
    assert all(torch.equal(state[k], v) for k, v in saved[-1].items())  # the second save, bit for bit
    assert consistent_files(run)["steps"] == 1 and not list(run.glob(".*.tmp"))  # save 1: step 0, save 2: step 1
    monkeypatch.setattr(safetensors.torch, "save_file", orig)  # space is back
    resume_to_the_end(run)


def test_real_full_disk_on_a_tiny_tmpfs(tmp_path):
    """Where this machine may mount a 256 KiB tmpfs: safetensors, torch.save and the cache meet a real ENOSPC."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root in a privileged container)")
    try:
        small, big = {"w": torch.ones(1000)}, {"w": torch.ones(100_000)}  # 4 KB fits, 400 KB does not
        save_state(mnt, small)
        with pytest.raises(OSError, match="no space left on device"):
            save_state(mnt, big)
        assert torch.equal(read_state_dict(mnt / CHECKPOINT)["w"], small["w"])
        torch.save(small, mnt / TRAINER_STATE)
        with pytest.raises(OSError, match="no space left on device"):  # torch only says "unexpected pos"
            atomic_write(mnt / TRAINER_STATE, lambda tmp: torch.save(big, tmp))
        assert torch.equal(torch.load(mnt / TRAINER_STATE, weights_only=True)["w"], small["w"])
        arrays = cached_arrays("emb", {"k": 1}, lambda: {"x": np.ones(200_000, np.float32)}, root=mnt)  # the cache just skips
        assert arrays["x"].shape == (200_000,) and not list((mnt / "emb").glob("*"))
        assert sorted(p.name for p in mnt.iterdir()) == [CHECKPOINT, "emb", TRAINER_STATE]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_orphan_temps_only_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "status.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = time.time() - 120
    for name, pid, age in (("dead-old", dead.pid, old), ("dead-new", dead.pid, time.time()), ("alive", os.getpid(), old)):
        path = tmp_path / f".status.json.{pid}.{name}.tmp"
        path.write_text("{")
        os.utime(path, (age, age))
    assert remove_orphan_temps(target) == 1
    assert sorted(p.name.split(".")[-2] for p in tmp_path.glob(".*.tmp")) == ["alive", "dead-new"]
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"


# ----------------------------------------------------------------------------- the on-disk cache is bounded


def test_cache_prunes_least_recently_used_entries_and_nothing_else(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    upload = root / "uploads" / "checkpoints" / "a.pt"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"\0" * 300_000)
    (root / "numba").mkdir()
    (root / "numba" / "f.nbc").write_bytes(b"\0" * 300_000)
    monkeypatch.setenv("SSL_VIZ_CACHE_MAX_MB", str(1.0))  # room for two 400 KB entries
    calls = []

    def compute(i):
        def run():
            calls.append(i)
            return {"x": np.full(100_000, i, np.float32)}
        return run

    for i in range(3):
        cached_arrays("emb", {"i": i}, compute(i), root=root)
        os.utime(root / "emb" / f"{key_hash({'i': i})}.npz", (time.time() - 100 + i, time.time() - 100 + i))
    assert not (root / "emb" / f"{key_hash({'i': 0})}.npz").exists()  # the oldest went
    cached_arrays("emb", {"i": 1}, compute(1), root=root)  # a hit: now the most recently used
    cached_arrays("emb", {"i": 3}, compute(3), root=root)
    left = {int(np.load(p)["x"][0]) for p in (root / "emb").glob("*.npz")}
    assert left == {1, 3} and calls == [0, 1, 2, 3]
    assert upload.exists() and (root / "numba" / "f.nbc").exists()  # never other files
    assert prune(root, max_bytes=0) == 2 and len(list((root / "emb").glob("*.npz"))) == 0
    # a damaged entry (disk error) is recomputed, not fatal
    path = root / "emb" / f"{key_hash({'i': 5})}.npz"
    path.write_bytes(b"PK\x03\x04 damaged")
    assert cached_arrays("emb", {"i": 5}, compute(5), root=root)["x"][0] == 5 and calls[-1] == 5


# ----------------------------------------------------------------------------- the app restarts


def test_restarted_app_reattaches_live_runs_and_marks_dead_ones(tmp_path, monkeypatch):
    """After a restart the server has no child handles: a live training process is still "running" and can be
    cancelled; a run stuck "starting" whose process is gone is "crashed"; a queued run is started."""
    from ssl_viz import jobs

    root = tmp_path / "runs"
    monkeypatch.setenv("SSL_VIZ_RUNS", str(root))
    monkeypatch.setattr(jobs.process, "_CHILDREN", {})
    monkeypatch.setattr(jobs.process, "_EXIT_CODES", {})
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        run = root / "live"
        run.mkdir(parents=True)
        (run / "job.json").write_text(json.dumps({"pgid": live.pid, "created": time.time(), "launched_at": time.time()}))
        (run / "status.json").write_text(json.dumps({"state": "running", "pid": live.pid, "heartbeat": time.time(), "step": 5,
                                                     "total_steps": 10, "progress": 0.5, "elapsed": 3.0}))
        status = jobs.run_status(run)
        assert status.state == "running" and status.pid == live.pid and status.eta_s is not None  # re-attached
        cancelled = jobs.cancel_run(run, wait=10)
        assert cancelled.state == "cancelled" and "cancelled" in cancelled.reason
        assert live.wait(timeout=10) == -signal.SIGTERM
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    starting = root / "starting"
    starting.mkdir()
    (starting / "job.json").write_text(json.dumps({"pgid": gone.pid, "launched_at": time.time() - 100}))
    (starting / "status.json").write_text(json.dumps({"state": "starting", "pid": gone.pid, "heartbeat": time.time() - 100}))
    (starting / "log.txt").write_text("Traceback (most recent call last):\nMemoryError\n")
    status = jobs.run_status(starting)
    assert status.state == "crashed" and "MemoryError" in status.reason and status.resumable

    queued = root / "queued"
    queued.mkdir()
    (queued / "job.json").write_text(json.dumps({"pending_argv": [sys.executable, "-c", "pass"], "queued_at": time.time(),
                                                 "created": time.time()}))
    (queued / "status.json").write_text(json.dumps({"state": "queued", "heartbeat": time.time()}))
    assert [s.name for s in jobs.list_runs(root) if s.name == "queued"]
    final = jobs.wait_for(queued, timeout=30)
    assert final.state == "crashed" and "exited with status 0" in final.reason  # it ran; it wrote no status of its own


SITECUSTOMIZE = """
import errno, os
if os.environ.get("SSL_VIZ_TEST_ENOSPC_AT"):  # the third checkpoint write of this process finds the disk full
    import safetensors.torch as _st
    _orig, _calls = _st.save_file, [0]
    def _save_file(tensors, filename, metadata=None):
        _calls[0] += 1
        if _calls[0] >= int(os.environ["SSL_VIZ_TEST_ENOSPC_AT"]):
            open(filename, "wb").write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return _orig(tensors, filename, metadata=metadata)
    _st.save_file = _save_file
"""


def test_disk_full_in_a_background_run_shows_in_its_status(tmp_path, monkeypatch):
    """A run started from the browser (ssl_viz.jobs) whose disk fills: "failed" with the disk-full line as its reason,
    resumable, and its last checkpoint loads."""
    from ssl_viz import jobs

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    monkeypatch.setenv("SSL_VIZ_TEST_ENOSPC_AT", "3")
    cfg = TrainConfig(method="simclr", encoder="small-cnn", encoder_width=8, dataset="digits", max_train_images=320, epochs=1.0,
                      batch_size=64, knn_every=0, checkpoint_every=0.0)
    run = jobs.start_run(cfg, tmp_path / "runs", nproc=0)
    status = jobs.wait_for(run, timeout=120)
    assert status.state == "failed" and status.resumable, status
    assert "no space left on device while writing checkpoint.safetensors; the previous checkpoint.safetensors" in status.reason
    assert load_model(run).card["steps"] == 1 and not list(run.glob(".*.tmp"))  # save 1: step 0, save 2: step 1
    print(f"\nbackground run, disk full: {status.state}: {status.reason.splitlines()[-1][:200]}")


def test_atomic_writes_get_normal_permissions(tmp_path):
    """Checkpoints are read by other users (the Docker image's app user): not the 0600 of mkstemp/safetensors."""
    import os
    import stat

    from ssl_viz.checkpoint import save_state

    old = os.umask(0o022)
    try:
        save_state(tmp_path, {"w": torch.ones(3)})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / CHECKPOINT).stat().st_mode) == 0o644
