"""Standard formats where the user has them: CIFAR-10 / CIFAR-100 (torchvision's pickles) and STL-10 (binary, memory-mapped).

Every test writes a few images in the exact on-disk format; nothing is downloaded (the network test is replaced
by one that says "offline"). CIFAR files are read by torchvision, which checks each file's md5 against the published
one: the tests put their tiny files' md5s in its place (``tiny_checksums``).
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_viz.data import DatasetError, cifar, load_dataset, standard, stl10
from ssl_viz.data import _load_cached as load_cache

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test reaches the network, and each starts with an empty registry cache."""
    monkeypatch.setattr(standard, "network_allows", lambda *a, **k: False)
    load_cache.cache_clear()
    yield
    load_cache.cache_clear()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def cifar_images(n: int, seed: int) -> np.ndarray:
    """``n`` images as CIFAR rows ``[n, 3072]``: R plane, G plane, B plane, each 32x32 row-major."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 4) -> tuple[Path, dict]:
    """``root/cifar-10-batches-py`` as torchvision lays it out (5 train batches, test_batch, batches.meta); returns the folder
    and what was written (images ``[N, 3072]`` and labels per split)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {"train": ([], []), "test": ([], [])}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = cifar_images(per_batch, i), [int(v) for v in np.arange(i, i + per_batch) % 10]
        _dump(folder / name, {"batch_label": f"batch {i + 1} of 5", "labels": labels, "data": data,
                              "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)]})
        split = "test" if name == "test_batch" else "train"
        written[split][0].append(data)
        written[split][1].extend(labels)
    _dump(folder / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": CIFAR10_CLASSES, "num_vis": 3072})
    return folder, {k: (np.concatenate(v[0]), np.asarray(v[1])) for k, v in written.items()}


def write_cifar100(root: Path, n_train: int = 6, n_test: int = 3) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        fine = [int(v) for v in (np.arange(n) * 17) % 100]
        _dump(folder / name, {"filenames": [f"{j}.png" for j in range(n)], "batch_label": f"{name}ing batch 1 of 1",
                              "fine_labels": fine, "coarse_labels": [v // 5 for v in fine], "data": cifar_images(n, seed)})
    _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return folder


def tiny_checksums(monkeypatch, variant: str, folder: Path) -> None:
    """Put the md5s of the tiny files of ``folder`` in place of torchvision's published ones."""
    cls = cifar.torchvision_class(variant)
    monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_reads_torchvision_layout_with_class_names(tmp_path, monkeypatch):
    folder, written = write_cifar10(tmp_path)
    tiny_checksums(monkeypatch, "cifar10", folder)
    for split, n in (("train", 20), ("test", 4)):
        ds = load_dataset(f"cifar10:{tmp_path}", split)  # the parent of cifar-10-batches-py
        assert ds.images.shape == (n, 3, 32, 32) and ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
        assert ds.class_names == CIFAR10_CLASSES
        data, labels = written[split]
        np.testing.assert_array_equal(ds.images.numpy().reshape(n, 3072), data)  # rows are R, G, B planes, row-major
        np.testing.assert_array_equal(ds.labels.numpy(), labels)
    # a known pixel: image 0 of data_batch_1, green channel, row 5, column 7
    ds = load_dataset(f"cifar10:{folder}", "train")  # the folder itself works too
    assert int(ds.images[0, 1, 5, 7]) == int(written["train"][0][0, 1024 + 5 * 32 + 7])


def test_cifar10_folder_may_have_any_name(tmp_path, monkeypatch):
    folder, written = write_cifar10(tmp_path)
    tiny_checksums(monkeypatch, "cifar10", folder)
    renamed = folder.rename(tmp_path / "my cifar")
    ds = load_dataset(f"cifar10:{renamed}", "test")
    np.testing.assert_array_equal(ds.labels.numpy(), written["test"][1])


def test_cifar100_fine_labels_and_coarse_factor(tmp_path, monkeypatch):
    folder = write_cifar100(tmp_path)
    tiny_checksums(monkeypatch, "cifar100", folder)
    ds = load_dataset(f"cifar100:{folder}", "train")
    assert ds.images.shape == (6, 3, 32, 32) and len(ds.class_names) == 100 and ds.class_names[17] == "fine17"
    np.testing.assert_array_equal(ds.labels.numpy(), (np.arange(6) * 17) % 100)
    np.testing.assert_array_equal(ds.factors["coarse"], ds.labels.numpy() // 5)
    coarse = load_dataset(f"cifar100:{folder}", "test", label="coarse")
    assert coarse.class_names == [f"coarse{i}" for i in range(20)] and coarse.label_factor == "coarse"
    np.testing.assert_array_equal(coarse.labels.numpy(), ((np.arange(3) * 17) % 100) // 5)


def test_cifar_file_not_matching_the_published_checksum_is_refused_before_unpickling(tmp_path, monkeypatch):
    folder, _ = write_cifar10(tmp_path)
    tiny_checksums(monkeypatch, "cifar10", folder)
    # a pickle that would run code if it were opened: it must be refused by its checksum first
    (folder / "data_batch_3").write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(DatasetError, match=r"data_batch_3 does not match the published CIFAR-10 checksum"):
        load_dataset(f"cifar10:{folder}", "train")
    assert not (tmp_path / "pwned").exists()


def test_cifar_missing_and_wrong_folders_are_one_sentence(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match=r"cifar10:.*nowhere: no such folder; expected cifar-10-batches-py"):
        load_dataset(f"cifar10:{tmp_path / 'nowhere'}")
    folder, _ = write_cifar10(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(DatasetError, match=r"has no test_batch; expected the folder cifar-10-batches-py"):
        load_dataset(f"cifar10:{tmp_path}")
    with pytest.raises(DatasetError, match=r"has no train; expected the folder cifar-100-python"):
        load_dataset(f"cifar100:{folder}")  # a CIFAR-10 folder named as CIFAR-100
    with pytest.raises(DatasetError, match="needs a path"):
        load_dataset("stl10:")


def test_bare_cifar_name_searches_the_default_places_and_never_downloads_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_VIZ_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SSL_VIZ_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match=r"CIFAR-10 not found: put torchvision's cifar-10-batches-py folder in one of"):
        load_dataset("cifar10")
    folder, written = write_cifar10(tmp_path / "data")
    tiny_checksums(monkeypatch, "cifar10", folder)
    load_cache.cache_clear()
    ds = load_dataset("cifar10", "test")
    assert ds.name == "cifar10" and len(ds) == 4


# --------------------------------------------------------------------------- STL-10


def stl_file(images: np.ndarray) -> bytes:
    """uint8 ``[N, 3, 96, 96]`` (C, H, W) as the STL-10 binary stores them: each plane column-major."""
    return np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes()


def write_stl10(root: Path, n_train: int = 3, n_test: int = 2, n_unlabeled: int = 5, names: bool = True) -> tuple[Path, dict]:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(stl_file(images))
        labels = (np.arange(n) % 10 + 1).astype(np.uint8)
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
        written[split] = (images, labels.astype(np.int64) - 1)
    if names:
        (folder / "class_names.txt").write_text("\n".join(stl10.CLASS_NAMES[::-1]) + "\n")
    return folder, written


def test_stl10_column_major_pixel_lands_in_place(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    raw = np.zeros((1, 3, 96, 96), dtype=np.uint8)
    # the file's byte for channel c, row y, column x sits at c*96*96 + x*96 + y (column-major planes)
    c, y, x = 1, 2, 70
    flat = raw.reshape(-1)
    flat[c * 96 * 96 + x * 96 + y] = 200
    (folder / "test_X.bin").write_bytes(flat.tobytes())
    (folder / "test_y.bin").write_bytes(bytes([3]))
    ds = load_dataset(f"stl10:{tmp_path}", "test")
    assert ds.images.shape == (1, 3, 96, 96)
    assert int(ds.images[0, c, y, x]) == 200 and int(ds.images.sum()) == 200
    assert ds.labels.tolist() == [2] and ds.class_names == stl10.CLASS_NAMES  # no class_names.txt: the published ten


def test_stl10_matches_torchvision_reader_and_reads_class_names(tmp_path, monkeypatch):
    folder, written = write_stl10(tmp_path)
    from torchvision.datasets import STL10

    monkeypatch.setattr(STL10, "_check_integrity", lambda self: True)  # its md5s are the published files'
    for split in ("train", "test"):
        ds = load_dataset(f"stl10:{folder}", split)
        tv = STL10(str(tmp_path), split=split)
        np.testing.assert_array_equal(ds.images.numpy(), tv.data)
        np.testing.assert_array_equal(ds.labels.numpy(), tv.labels)
        np.testing.assert_array_equal(ds.images.numpy(), written[split][0])
        assert ds.class_names == tv.classes == stl10.CLASS_NAMES[::-1]


def test_stl10_unlabeled_trains_on_the_unlabelled_images_and_tests_on_labelled_ones(tmp_path):
    folder, written = write_stl10(tmp_path)
    train = load_dataset(f"stl10-unlabeled:{tmp_path}", "train")
    assert train.images.shape == (5, 3, 96, 96) and (train.labels == -1).all() and not train.has_labels and train.class_names == []
    np.testing.assert_array_equal(train.images.numpy(), written["unlabeled"][0])
    test = load_dataset(f"stl10-unlabeled:{tmp_path}", "test")
    assert test.has_labels and len(test) == 2
    assert train.name == f"stl10-unlabeled:{tmp_path}"


def _mapped_file(address: int) -> str | None:
    """The file mapped at ``address`` in this process (``/proc/self/maps``), or None for anonymous memory."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        lo, hi = (int(v, 16) for v in fields[0].split("-"))
        if lo <= address < hi:
            return fields[5].strip() if len(fields) == 6 else None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
def test_stl10_is_memory_mapped_not_read(tmp_path):
    folder, written = write_stl10(tmp_path, n_unlabeled=40)
    ds = stl10.load("train", path=folder, unlabeled=True)
    assert _mapped_file(ds.images.data_ptr()) == str((folder / "unlabeled_X.bin").resolve())  # the file's pages, not a copy
    assert not ds.images.is_contiguous()  # the column-major planes transposed by strides, not copied
    before = (folder / "unlabeled_X.bin").read_bytes()
    ds.images[0].zero_()  # copy-on-write: a write to the tensor never reaches the file
    assert (folder / "unlabeled_X.bin").read_bytes() == before
    sub = ds.subset([3, 1])
    np.testing.assert_array_equal(sub.images.numpy(), written["unlabeled"][0][[3, 1]])


def test_stl10_wrong_files_are_one_sentence(tmp_path):
    with pytest.raises(DatasetError, match=r"stl10:.*: .* has no train_y.bin; expected the folder stl10_binary"):
        folder = tmp_path / "stl10_binary"
        folder.mkdir()
        (folder / "train_X.bin").write_bytes(bytes(stl10.IMAGE_BYTES))
        load_dataset(f"stl10:{tmp_path}")
    (folder / "train_y.bin").write_bytes(bytes([1, 1]))
    with pytest.raises(DatasetError, match="holds 2 labels for 1 images"):
        load_dataset(f"stl10:{tmp_path}")
    (folder / "train_X.bin").write_bytes(bytes(stl10.IMAGE_BYTES + 5))
    load_cache.cache_clear()
    with pytest.raises(DatasetError, match="not a whole number of 3x96x96 images"):
        load_dataset(f"stl10:{tmp_path}")
    (folder / "train_X.bin").write_bytes(bytes(stl10.IMAGE_BYTES))
    (folder / "train_y.bin").write_bytes(bytes([11]))
    with pytest.raises(DatasetError, match=r"labels must be 1..10, found 11..11"):
        load_dataset(f"stl10:{tmp_path}")
    with pytest.raises(DatasetError, match=r"stl10-unlabeled:.*has no unlabeled_X.bin"):
        load_dataset(f"stl10-unlabeled:{tmp_path}")


def test_bare_stl10_not_found_names_the_places(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_VIZ_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match=r"STL-10 not found: put its stl10_binary folder \(test_X.bin, test_y.bin\) in one of"):
        load_dataset("stl10", "test")


def test_cli_trains_on_a_path_name(tmp_path):
    """``NAME:PATH`` passes the configuration check like ``folder:PATH`` (checked when loaded)."""
    from ssl_viz.cli import main

    write_stl10(tmp_path, n_unlabeled=8)
    out = tmp_path / "run"
    rc = main(["train", "--dataset", f"stl10-unlabeled:{tmp_path}", "--encoder", "small-cnn", "--width", "8", "--batch-size", "4",
               "--epochs", "1", "--knn-every", "0", "--device", "cpu", "--out", str(out), "--quiet"])
    assert rc == 0 and (out / "checkpoint.safetensors").is_file()
    assert main(["train", "--dataset", f"cifar10:{tmp_path / 'none'}", "--out", str(tmp_path / "r2"), "--quiet"]) == 2
