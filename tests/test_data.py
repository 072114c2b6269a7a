"""Datasets: shapes and dtypes, determinism, disjoint splits, relabelling, and the factors meaning what they say."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_viz.data import DATASETS, DatasetError, dataset_names, fashion_mnist, folder, load_dataset, photos, shapes, textures

LUMA = torch.tensor([0.2989, 0.587, 0.114])


def _hashes(images: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in images}


# --------------------------------------------------------------------------- registry


def test_registry_names_and_unknown():
    assert set(DATASETS) == {"digits", "fashion-mnist", "textures", "shapes", "photos", "photo-patches", "folder", "cifar10", "cifar100", "stl10",
                             "stl10-unlabeled"}
    assert "folder:" in dataset_names()
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("nope")
    with pytest.raises(DatasetError, match="needs a path"):
        load_dataset("folder:")


@pytest.mark.parametrize("name, channels, side", [("textures", 1, 32), ("shapes", 3, 32), ("photos", 3, 128)])
def test_builtin_shapes_and_dtypes(name, channels, side):
    ds = load_dataset(name, "test")
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    assert ds.images.shape[1:] == (channels, side, side)
    assert len(ds.labels) == len(ds) > 0


# --------------------------------------------------------------------------- textures


def orientation_bins(images: np.ndarray) -> np.ndarray:
    """Dominant line orientation of ``[N, H, W]`` images from the gradient structure tensor, as 45-degree bins ``[N]``."""
    gy_rows, gx = np.gradient(images.astype(np.float64), axis=(1, 2))
    gy = -gy_rows  # y up
    jxx, jyy, jxy = (gx * gx).sum((1, 2)), (gy * gy).sum((1, 2)), (gx * gy).sum((1, 2))
    gradient_deg = 0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy))
    return np.round(((gradient_deg + 90.0) % 180.0) / 45.0).astype(int) % 4  # lines run across the gradient


def test_textures_deterministic_and_disjoint():
    a, b = textures.load("train", n=300, seed=3), textures.load("train", n=300, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, textures.load("train", n=300, seed=4).images)
    test = textures.load("test", n=300, seed=3)
    assert not _hashes(a.images) & _hashes(test.images)
    assert a.images.shape == (300, 1, 32, 32)
    assert a.label_factor == "orientation" and a.class_names == ["0°", "45°", "90°", "135°"]
    combos = np.bincount(a.factors["source"] * 4 + a.factors["orientation"], minlength=20)
    assert combos.min() == combos.max() == 15  # balanced over source x orientation


def test_textures_relabel_by_source():
    ds = load_dataset("textures", "test", label="source")
    assert ds.label_factor == "source" and ds.class_names == textures.SOURCES
    assert np.array_equal(ds.labels.numpy(), ds.factors["source"])


def test_rot90_of_a_patch_is_the_patch_at_angle_plus_90():
    texture = textures.source_textures()["brick"]
    centres = np.array([[60.0, 70.0], [100.5, 120.25]])
    for angle in (0.0, 45.0, 90.0, 135.0):
        base = textures.sample_patches(texture, centres, np.full(2, angle))
        turned = textures.sample_patches(texture, centres, np.full(2, angle + 90.0))
        np.testing.assert_allclose(np.rot90(base, 1, axes=(1, 2)), turned, atol=1e-5)
        # torch.rot90 turns the same way as np.rot90 (counter-clockwise as displayed)
        assert torch.equal(torch.rot90(torch.from_numpy(base), 1, dims=(-2, -1)), torch.from_numpy(np.rot90(base, 1, axes=(1, 2)).copy()))


def test_texture_orientation_label_matches_image_content_and_rotation():
    ds = textures.load("train", n=1000, seed=0)
    images = ds.images[:, 0].numpy()
    labels, source = ds.labels.numpy(), ds.factors["source"]
    rotated = np.rot90(images, 1, axes=(1, 2))
    for name in ("brick", "streaks", "grating"):  # clearly oriented sources
        m = source == textures.SOURCES.index(name)
        assert (orientation_bins(images[m]) == labels[m]).mean() > 0.9, name
        # a 90-degree turn lands in the orthogonal class (0 <-> 90, 45 <-> 135)
        assert (orientation_bins(rotated[m]) == (labels[m] + 2) % 4).mean() > 0.9, name
    everything = (orientation_bins(images) == labels).mean()
    assert everything > 0.6  # grass/gravel are nearly isotropic; random labels would give ~0.25


# --------------------------------------------------------------------------- shapes


def _foreground_color(images: torch.Tensor) -> torch.Tensor:
    """Mean RGB ``[N, 3]`` of the coloured pixels (the background is grey: max - min channel below 0.15)."""
    x = images.float() / 255.0
    mask = ((x.amax(1) - x.amin(1)) > 0.15).float()[:, None]
    return (x * mask).sum((2, 3)) / mask.sum((2, 3)).clamp(min=1)


def _nearest_centroid_accuracy(train_x, train_y, test_x, test_y, k):
    centroids = torch.stack([train_x[train_y == c].mean(0) for c in range(k)])
    return (torch.cdist(test_x, centroids).argmin(1) == test_y).float().mean().item()


def test_shapes_deterministic_disjoint_and_balanced():
    a, b = shapes.load("train", n=400, seed=1), shapes.load("train", n=400, seed=1)
    assert torch.equal(a.images, b.images)
    assert a.images.shape == (400, 3, 32, 32) and a.images.dtype == torch.uint8
    assert a.label_factor == "shape" and a.class_names == shapes.SHAPES
    assert not _hashes(a.images) & _hashes(shapes.load("test", n=400, seed=1).images)
    for factor, values in a.factors.items():
        counts = np.bincount(values, minlength=len(a.factor_names[factor]))
        assert counts.max() - counts.min() <= 1, factor


def test_shape_colors_are_isoluminant():
    luma = shapes.COLORS @ LUMA.double().numpy()
    assert np.ptp(luma) < 0.005
    assert len({tuple(np.round(c, 2)) for c in shapes.COLORS}) == len(shapes.COLOR_NAMES) >= 4


def test_shape_color_recoverable_in_rgb_not_in_grayscale():
    train, test = load_dataset("shapes", "train", label="color"), load_dataset("shapes", "test", label="color")
    assert train.class_names == shapes.COLOR_NAMES and torch.equal(train.labels, torch.as_tensor(train.factors["color"]))
    k = train.num_classes
    rgb_tr, rgb_te = _foreground_color(train.images), _foreground_color(test.images)
    assert _nearest_centroid_accuracy(rgb_tr, train.labels, rgb_te, test.labels, k) > 0.95
    gray_tr, gray_te = (rgb_tr @ LUMA)[:, None], (rgb_te @ LUMA)[:, None]
    assert _nearest_centroid_accuracy(gray_tr, train.labels, gray_te, test.labels, k) < 0.5


def test_shape_brightness_levels_isoluminant_within_a_level():
    assert list(shapes.BRIGHTNESS) == ["dark", "mid", "bright"]
    luma = shapes.LEVEL_COLORS @ LUMA.double().numpy()                               # [3 levels, 4 colours]
    assert np.ptp(luma, axis=1).max() < 0.005 and np.allclose(luma[:, 0], list(shapes.BRIGHTNESS.values()), atol=0.005)
    assert np.allclose(shapes.LEVEL_COLORS[1], shapes.COLORS)                       # the mid level is the colour factor's palette
    train, test = load_dataset("shapes", "train", label="brightness"), load_dataset("shapes", "test", label="brightness")
    assert train.class_names == ["dark", "mid", "bright"] and train.num_classes == 3
    fg_tr, fg_te = _foreground_color(train.images) @ LUMA, _foreground_color(test.images) @ LUMA
    assert _nearest_centroid_accuracy(fg_tr[:, None], train.labels, fg_te[:, None], test.labels, 3) > 0.9   # luma reads it
    by_level = [float(fg_te[test.labels == k].mean()) for k in range(3)]
    assert by_level == sorted(by_level)
    for other in ("shape", "color", "size", "position", "orientation"):              # independent of the other factors
        table = np.histogram2d(train.factors["brightness"], train.factors[other], bins=(3, len(train.factor_names[other])))[0]
        assert table.min() > 0.6 * table.mean(), other


# --------------------------------------------------------------------------- photos


def test_photos_unlabelled_full_set_in_both_splits():
    train, test = load_dataset("photos", "train"), load_dataset("photos", "test")
    assert len(train) >= 5 and torch.equal(train.images, test.images)
    assert (train.labels == -1).all() and train.class_names == [] and not train.has_labels
    named = load_dataset("photos", label="photo")
    assert named.class_names[:2] == ["astronaut", "camera"] and named.labels.tolist() == list(range(len(named)))
    assert photos.load(size=32).images.shape[1:] == (3, 32, 32)


# --------------------------------------------------------------------------- folder


def _save(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


@pytest.fixture
def image_folder(tmp_path):
    """cat/ (6 RGB + corrupt .jpg + truncated .png + RGBA + CMYK + palette), dog/ (6 + notes.txt + 16-bit + non-UTF-8 name)."""
    root = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for i in range(6):
            _save(root / cls / f"{i}.png", rng.integers(0, 256, (24 + i, 40, 3), dtype=np.uint8))
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    data = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("RGBA", (30, 20), (255, 0, 0, 0)).save(root / "cat" / "clear.png")
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(root / "cat" / "cmyk.jpg")  # red
    Image.new("P", (30, 30), 3).save(root / "cat" / "palette.gif")
    (root / "dog" / "notes.txt").write_text("not an image")
    _save(root / "dog" / "deep.png", np.full((20, 20), 128 * 257, dtype=np.uint16))
    with open(os.fsencode(root / "dog") + b"/caf\xe9.png", "wb") as fh:  # latin-1 name: not valid UTF-8
        Image.new("RGB", (16, 16), (0, 0, 255)).save(fh, format="PNG")
    (root / ".hidden").mkdir()
    return root


def test_folder_imagefolder_skips_and_reports(image_folder):
    train = folder.load("train", path=image_folder, size=16)
    rep = folder.last_report
    assert rep is folder.report(image_folder, "train") and rep.layout == "imagefolder" and rep.mode == "RGB"
    test = folder.load("test", path=image_folder, size=16)
    assert train.class_names == ["cat", "dog"] and train.images.shape[1:] == (3, 16, 16)
    assert len(train) + len(test) == 6 + 3 + 6 + 2  # the corrupt, truncated and .txt files are out
    assert set(test.labels.tolist()) == {0, 1} and not _hashes(train.images) & _hashes(test.images)
    skipped = dict(folder.report(image_folder, "train").skipped) | dict(folder.report(image_folder, "test").skipped)
    assert set(skipped) == {"cat/broken.jpg", "cat/truncated.png", "dog/notes.txt"}
    assert "not an image file" in skipped["dog/notes.txt"] and "cannot" in skipped["cat/broken.jpg"]
    assert "truncated" in skipped["cat/truncated.png"]
    again = folder.load("train", path=image_folder, size=16)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)


def test_folder_converts_odd_modes(image_folder):
    every = torch.cat([folder.load(s, path=image_folder, size=8).images for s in ("train", "test")])
    colors = {tuple(int(v) for v in img[:, 4, 4]) for img in every}
    assert (255, 255, 255) in colors  # transparent RGBA over white
    assert (0, 0, 255) in colors  # the non-UTF-8 file name was read
    assert any(c[0] > 200 and c[1] < 60 and c[2] < 60 for c in colors)  # CMYK (0, 255, 255, 0) is red
    assert (128, 128, 128) in colors  # 16-bit mid grey rescaled, not clipped to white


def test_folder_grayscale_flat_and_registry(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(10):
        _save(tmp_path / f"g{i}.png", rng.integers(0, 256, (20, 30), dtype=np.uint8))
    ds = load_dataset(f"folder:{tmp_path}", "train", size=12)
    assert ds.name == f"folder:{tmp_path}" and ds.images.shape == (8, 1, 12, 12)
    assert (ds.labels == -1).all() and ds.class_names == [] and folder.last_report.layout == "flat"
    assert len(folder.load("test", path=tmp_path, size=12)) == 2


def test_folder_caps_and_guards(tmp_path):
    for i in range(6):
        _save(tmp_path / f"{i}.png", np.full((10 + 10 * (i == 0), 10), i * 40, dtype=np.uint8))
    capped = folder.load("train", path=tmp_path, size=8, max_images=4)
    assert folder.last_report.capped == 2 and len(capped) + len(folder.load("test", path=tmp_path, size=8, max_images=4)) == 4
    folder.load("train", path=tmp_path, size=8, max_pixels=150)
    assert "decompression bomb" in dict(folder.last_report.skipped)["0.png"]


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        folder.load(path=tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not a directory"):
        folder.load(path=tmp_path / "file.png")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    with pytest.raises(DatasetError, match="no readable images"):
        folder.load(path=tmp_path / "texts")


# --------------------------------------------------------------------------- fashion-mnist


def _write_idx(path, array: np.ndarray, magic: int, compress: bool):
    raw = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_read_idx_plain_gzip_and_corrupt(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    _write_idx(tmp_path / "a.gz", images, 0x803, compress=True)
    _write_idx(tmp_path / "a", images, 0x803, compress=False)
    assert np.array_equal(fashion_mnist.read_idx(tmp_path / "a.gz", 3), images)
    assert np.array_equal(fashion_mnist.read_idx(tmp_path / "a", 3), images)
    _write_idx(tmp_path / "bad", images, 0x801, compress=False)
    with pytest.raises(DatasetError, match="magic"):
        fashion_mnist.read_idx(tmp_path / "bad", 3)
    (tmp_path / "short").write_bytes((tmp_path / "a").read_bytes()[:-5])
    with pytest.raises(DatasetError, match="truncated"):
        fashion_mnist.read_idx(tmp_path / "short", 3)
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DatasetError):
        fashion_mnist.read_idx(tmp_path / "broken.gz", 3)


def test_fashion_mnist_missing_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(fashion_mnist, "candidate_dirs", lambda: [])
    monkeypatch.setattr(fashion_mnist, "download", lambda *a, **k: False)
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load("test")


@pytest.mark.skipif(fashion_mnist.find_files("train") is None or fashion_mnist.find_files("test") is None,
                    reason="Fashion-MNIST idx files not found (apt-get install dataset-fashion-mnist, or set SSL_VIZ_DATA)")
def test_fashion_mnist_standard_splits():
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.num_classes == 10
    for ds in (train, test):
        assert ds.labels.min() == 0 and ds.labels.max() == 9
        assert torch.bincount(ds.labels).tolist() == [len(ds) // 10] * 10


def test_photo_patches_are_seeded_colour_crops_labelled_by_their_photograph():
    from ssl_viz.data import photo_patches

    train, test = load_dataset("photo-patches", "train"), load_dataset("photo-patches", "test")
    assert train.images.shape == (20_000, 3, 32, 32) and test.images.shape == (4_000, 3, 32, 32)
    assert train.class_names == list(photo_patches._photos()[0]) and len(train.class_names) >= 2
    assert torch.equal(train.labels, torch.as_tensor(train.factors["photo"]))
    counts = torch.bincount(train.labels)
    assert counts.max() - counts.min() <= 1  # balanced over the photographs
    again = photo_patches.load("train", size=16, seed=0)
    assert torch.equal(again.images, photo_patches.load("train", size=16, seed=0).images)  # seeded
    assert not torch.equal(again.images, photo_patches.load("train", size=16, seed=1).images)
    assert not torch.equal(train.images[:100], test.images[:100])  # the splits are different crops
    # colour: the channels differ (not grayscale stored three times)
    assert (train.images[:, 0].float() - train.images[:, 1].float()).abs().mean() > 5
    with pytest.raises(DatasetError, match="size"):
        photo_patches.load("train", size=4)
