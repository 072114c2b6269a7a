"""The image store of folder datasets: built once, reopened, rebuilt when the folder changes, never half-written;
every valid image in ``split="all"``, corrupt files out before the split, every skipped file reported."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_viz import cli
from ssl_viz.data import folder, load_dataset, store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_VIZ_CACHE", str(tmp_path / "cache"))


def _png(path: Path, value: int, shape=(12, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


def _truncated(path: Path) -> None:
    """A PNG whose header reads but whose pixels do not: it passes the header probe and fails to decode."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _stores(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cache" / "images").iterdir())


def test_first_load_builds_reopen_opens_and_views_share_the_memmap(tmp_path):
    for c in ("a", "b"):
        for i in range(10):
            _png(tmp_path / "imgs" / c / f"{i}.png", 20 * i + (c == "b"))
    train = folder.load("train", path=tmp_path / "imgs", size=8)
    built = folder.last_report.store
    test, every = (folder.load(s, path=tmp_path / "imgs", size=8) for s in ("test", "all"))
    assert folder.last_report.store == built and _stores(tmp_path) == [Path(built).name]
    assert len(every) == 20 and len(train) == 16 and len(test) == 4 and every.split == "all"
    assert torch.equal(every.images[:16], train.images) and torch.equal(every.images[16:], test.images)
    # zero-copy: train and all start at the same address of the one mapping
    assert train.images.data_ptr() == every.images.data_ptr()
    assert test.images.data_ptr() == every.images.data_ptr() + 16 * every.images[0].numel()
    assert sorted(every.names) == sorted(f"{c}/{i}.png" for c in "ab" for i in range(10))
    assert all(every.class_names[int(y)] == n.split("/")[0] for y, n in zip(every.labels, every.names))
    assert folder.last_report.disk_bytes >= 20 * 64


def test_a_changed_folder_is_rebuilt_and_the_old_store_removed(tmp_path):
    root = tmp_path / "imgs"
    for i in range(6):
        _png(root / f"{i}.png", 30 * i)
    assert len(folder.load("all", path=root, size=8)) == 6
    first = folder.last_report.store
    assert len(folder.load("all", path=root, size=8)) == 6 and folder.last_report.store == first  # unchanged: reopened
    _png(root / "6.png", 250)  # a new file
    assert len(folder.load("all", path=root, size=8)) == 7
    second = folder.last_report.store
    assert second != first and _stores(tmp_path) == [Path(second).name]
    os.utime(root / "0.png", ns=(1, 1))  # only a modification time changes
    folder.load("all", path=root, size=8)
    assert folder.last_report.store not in (first, second) and len(_stores(tmp_path)) == 1
    folder.load("all", path=root, size=16)  # other options: another store, the first one kept
    assert len(_stores(tmp_path)) == 2


def _build(root: Path, key: str, n: int, decode, **kwargs):
    return store.build_store(key, n, (1, 4, 4), decode, lambda ok: (ok[:-1], ok[-1:]), np.zeros(n, dtype=np.int64),
                             [str(i) for i in range(n)], {}, workers=1, root=root, **kwargs)


def _pixels(k: int) -> np.ndarray:
    return np.full((1, 4, 4), k % 256, dtype=np.uint8)


def test_a_failure_mid_build_leaves_the_previous_store_and_no_temp(tmp_path, monkeypatch):
    old = _build(tmp_path, "a" * 24, 10, _pixels)
    before = np.array(old.images)

    def failing(k: int) -> np.ndarray:
        if k == 30:
            raise RuntimeError("injected")
        return _pixels(k)

    with pytest.raises(RuntimeError, match="injected"):
        _build(tmp_path, "b" * 24, 100, failing, replaces=lambda meta: True)
    assert sorted(os.listdir(tmp_path / "images")) == ["a" * 24]  # the previous store, no temp folder, no new store
    assert np.array_equal(store.open_store("a" * 24, tmp_path).images, before)

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "_to_split_order", disk_full)
    with pytest.raises(store.StoreError, match="No space left"):
        _build(tmp_path, "c" * 24, 100, _pixels)
    assert sorted(os.listdir(tmp_path / "images")) == ["a" * 24]


def test_a_killed_build_leaves_the_previous_store_or_none(tmp_path):
    _build(tmp_path, "a" * 24, 10, _pixels)
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        import numpy as np
        from ssl_viz.data import store

        def slow(k):
            time.sleep(0.004)
            return np.full((1, 4, 4), k % 256, dtype=np.uint8)

        store.build_store("{'b' * 24}", 3000, (1, 4, 4), slow, lambda ok: (ok[:-1], ok[-1:]), np.zeros(3000, dtype=np.int64),
                          [str(i) for i in range(3000)], {{}}, workers=1, root=Path(sys.argv[1]), replaces=lambda m: True,
                          progress=lambda f, t: print(f, flush=True))
        print("finished", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # the first progress report: decoding is under way
        assert line and float(line) < 1.0, line
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    names = sorted(os.listdir(tmp_path / "images"))
    assert "b" * 24 not in names and "a" * 24 in names
    assert store.open_store("b" * 24, tmp_path) is None
    assert np.array_equal(np.asarray(store.open_store("a" * 24, tmp_path).images[:, 0, 0, 0]), np.arange(10))
    leftovers = [n for n in names if n.startswith(store.TMP_PREFIX)]
    assert len(leftovers) == 1 and store.remove_orphan_builds(tmp_path / "images", min_age_s=0) == 1
    assert sorted(os.listdir(tmp_path / "images")) == ["a" * 24]


def test_a_damaged_store_is_rebuilt(tmp_path):
    for i in range(5):
        _png(tmp_path / "imgs" / f"{i}.png", 40 * i)
    folder.load("all", path=tmp_path / "imgs", size=8)
    images = Path(folder.last_report.store) / store.IMAGES
    with open(images, "r+b") as fh:
        fh.truncate(10)  # a disk error, a hand edit
    again = folder.load("all", path=tmp_path / "imgs", size=8)
    assert len(again) == 5 and os.path.getsize(images) == 5 * 64


def test_split_all_has_every_valid_image_and_corrupt_files_leave_before_the_split(tmp_path):
    """Each class: 2 valid images and a truncated PNG. The split is drawn over the valid ones, so every class keeps
    one test image (drawn over all three, a third of the classes would lose theirs to the broken file)."""
    root = tmp_path / "imgs"
    classes = [f"c{i}" for i in range(12)]
    for c, name in enumerate(classes):
        _png(root / name / "x.png", 10 * c)
        _png(root / name / "y.png", 10 * c + 5)
        _truncated(root / name / "broken.png")
    every = load_dataset(f"folder:{root}", "all", size=8)
    assert len(every) == 24 and sorted(every.names) == sorted(f"{c}/{f}" for c in classes for f in ("x.png", "y.png"))
    test = load_dataset(f"folder:{root}", "test", size=8)
    train = load_dataset(f"folder:{root}", "train", size=8)
    assert sorted(test.labels.tolist()) == list(range(12)) and sorted(train.labels.tolist()) == list(range(12))
    assert sorted(set(train.names) | set(test.names)) == sorted(every.names)
    skipped = dict(folder.report(root, "test").skipped)
    assert set(skipped) == {f"{c}/broken.png" for c in classes} and all("truncated" in why for why in skipped.values())


def test_the_skip_report_lists_every_skipped_file_in_every_split_and_the_cli(tmp_path, tiny_model_dir, capsys):
    root = tmp_path / "imgs"
    for c in ("cat", "dog"):
        for i in range(5):
            _png(root / c / f"{i}.png", 20 * i + 100 * (c == "dog"))
    bad = {"cat/notes.txt": "not an image file", "cat/junk.png": "cannot open", "dog/cut.png": "truncated",
           "dog/huge.png": "too many pixels", "loose.png": "outside any class folder"}
    (root / "cat" / "notes.txt").write_text("x")
    (root / "cat" / "junk.png").write_bytes(b"\x89PNG not really")
    _truncated(root / "dog" / "cut.png")
    _png(root / "dog" / "huge.png", 7, shape=(400, 400))
    _png(root / "loose.png", 9)
    for split in ("train", "test", "all"):
        folder.load(split, path=root, size=8, max_pixels=100_000)
        got = dict(folder.report(root, split).skipped)
        assert set(got) == set(bad) and all(why in got[name] for name, why in bad.items()), got

    out = tmp_path / "emb.npz"
    code = cli.main(["embed", "--checkpoint", str(tiny_model_dir), "--dataset", f"folder:{root}", "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 0, err
    data = np.load(out)
    assert str(data["split"]) == "all" and data["embeddings"].shape[0] == 11  # a folder embeds every image by default
    assert sorted(data["names"]) == sorted([f"{c}/{i}.png" for c in ("cat", "dog") for i in range(5)] + ["dog/huge.png"])
    assert len(err) == 1 and err[0].startswith("skipped 4 files") and "emb.npz.skipped.tsv" in err[0]  # max_pixels default
    listing = (tmp_path / "emb.npz.skipped.tsv").read_text().splitlines()
    assert listing[0] == "file\treason" and {line.split("\t")[0] for line in listing[1:]} == set(bad) - {"dog/huge.png"}

    code = cli.main(["embed", "--checkpoint", str(tiny_model_dir), "--dataset", f"folder:{root}", "--split", "test",
                     "--out", str(out)])
    assert code == 0 and np.load(out)["embeddings"].shape[0] == 2 and str(np.load(out)["split"]) == "test"
    capsys.readouterr()
    code = cli.main(["evaluate", "--checkpoint", str(tiny_model_dir), "--dataset", f"folder:{root}", "--split", "all"])
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 0 and result["geometry"] == "all" and result["n_train"] == 9 and result["n_test"] == 2
    assert captured.err.startswith("skipped 4 files")


def test_split_all_of_builtin_sets():
    digits = load_dataset("digits", "all")
    assert len(digits) == len(load_dataset("digits", "train")) + len(load_dataset("digits", "test"))
    assert len(load_dataset("photos", "all")) == len(load_dataset("photos", "train"))  # the same images in both splits
    with pytest.raises(Exception, match="'train', 'test' or 'all'"):
        load_dataset("digits", "every")


def test_lru_bound_keeps_the_newest(tmp_path):
    for key in ("a", "b", "c"):
        _build(tmp_path, key * 24, 50, _pixels)
        time.sleep(0.01)
    os.utime(tmp_path / "images" / ("a" * 24) / store.META)  # used most recently
    one = store.folder_bytes(tmp_path / "images" / ("a" * 24))
    assert store.prune(tmp_path / "images", max_bytes=2 * one) == 1
    assert sorted(os.listdir(tmp_path / "images")) == ["a" * 24, "c" * 24]
