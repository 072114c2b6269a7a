"""Image sizes people use (32, 64, 96, 128, 224 px): train and embed a folder at each, the suggested recipes,
``TrainConfig.image_size`` in config.json and on the command line, the batched augmentation at 224 px, the Train page."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from ssl_viz import data as data_module
from ssl_viz.augment import BatchAugment, MultiViewAugment, parse_policy
from ssl_viz.cli import build_parser, config_from_args, main, train_flags, trained_image_size
from ssl_viz.config import IMAGE_SIZES, Recipe, TrainConfig, from_dict, save_json, suggested_recipe, to_dict
from ssl_viz.data import DatasetError, load_dataset
from ssl_viz.encoders import ENCODERS
from ssl_viz.rundir import read_config, write_config

PAGE_BATCHES = (16, 32, 64, 128, 256, 512, 1024)  # the Train page's batch slider
PAGE_WIDTHS = (8, 16, 32, 64)


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """2 classes x 4 colour images of 100 x 80 px (so every size resizes or crops)."""
    root = tmp_path_factory.mktemp("sizes") / "colours"
    rng = np.random.default_rng(0)
    for cls in ("red", "blue"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


@pytest.fixture()
def isolated_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_VIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSL_VIZ_RUNS", str(tmp_path / "runs"))


# --------------------------------------------------------------------------- train and embed at each size


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_folder_trains_and_embeds_at_size(size, colour_folder, tmp_path, monkeypatch, isolated_cache, capsys):
    recipe = suggested_recipe(size, "cpu")
    run = tmp_path / "run"
    rc = main(["train", "--dataset", f"folder:{colour_folder}", "--image-size", str(size), "--encoder", recipe.encoder,
               "--width", str(recipe.encoder_width), "--lr", str(recipe.lr), "--batch-size", "4", "--epochs", "2",
               "--knn-every", "0", "--device", "cpu", "--out", str(run), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert read_config(run).image_size == size and trained_image_size(run) == size
    card = json.loads((run / "card.json").read_text())
    assert card["image_size"] == [size, size] and card["steps"] >= 1

    seen = []
    real = data_module.load_dataset

    def spy(*args, **kwargs):
        ds = real(*args, **kwargs)
        seen.append(ds.image_size)
        return ds

    monkeypatch.setattr(data_module, "load_dataset", spy)
    out = tmp_path / "emb.npz"
    assert main(["embed", "--checkpoint", str(run), "--dataset", f"folder:{colour_folder}", "--device", "cpu", "--out", str(out)]) == 0
    with np.load(out) as z:
        assert z["embeddings"].shape[0] == 8 and len(z["names"]) == 8 and np.isfinite(z["embeddings"]).all()
    assert seen and set(seen) == {(size, size)}  # embedded at the size the model was trained at


def test_embed_image_size_flag_overrides_the_trained_size(colour_folder, tmp_path, monkeypatch, isolated_cache, tiny_model_dir):
    sizes = []
    real = data_module.load_dataset
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: sizes.append(k.get("image_size")) or real(*a, **k))
    out = tmp_path / "e.npz"
    assert main(["embed", "--checkpoint", str(tiny_model_dir), "--dataset", f"folder:{colour_folder}", "--image-size", "32",
                 "--out", str(out)]) == 0
    assert sizes == [32] and np.load(out)["embeddings"].shape[0] == 8
    sizes.clear()
    assert main(["embed", "--checkpoint", str(tiny_model_dir), "--dataset", f"folder:{colour_folder}", "--out", str(out)]) == 0
    assert sizes == [None]  # a model trained without image_size: the folder's default (64 px)
    assert np.load(out)["embeddings"].shape[0] == 8


def test_evaluate_reads_a_folder_at_the_trained_size_or_the_flag(colour_folder, tmp_path, monkeypatch, isolated_cache, tiny_model_dir, capsys):
    """evaluate, like embed: --image-size N, else the size in the run's config.json, else the folder's 64 px."""
    sizes = []
    real = data_module.load_dataset
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: sizes.append(k.get("image_size")) or real(*a, **k))
    argv = ["evaluate", "--checkpoint", str(tiny_model_dir), "--dataset", f"folder:{colour_folder}", "--k", "3"]
    assert main([*argv, "--image-size", "32"]) == 0, capsys.readouterr().err
    assert sizes == [32, 32]  # train (the kNN bank) and test at the same size
    sizes.clear()
    config = json.loads((tiny_model_dir / "config.json").read_text()) if (tiny_model_dir / "config.json").exists() else None
    assert main(argv) == 0
    assert sizes == [config.get("image_size") if config else None] * 2


# --------------------------------------------------------------------------- bad sizes, fixed-size datasets


@pytest.mark.parametrize("value", ["5", "2000", "abc", "64.5"])
@pytest.mark.parametrize("command", ["train", "embed"])
def test_bad_image_size_is_one_sentence_and_exit_2(command, value, capsys):
    argv = ["train", "--dataset", "digits"] if command == "train" else ["embed", "--checkpoint", "x", "--dataset", "digits", "--out", "o.npz"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--image-size", value])
    assert exc.value.code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(error) == 1 and "--image-size" in error[0] and ("8 and 1024" in error[0]), error


def test_bad_image_size_in_a_config_file(tmp_path, capsys):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({**to_dict(TrainConfig(dataset="digits")), "image_size": 4000}))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "8 and 1024" in err[0]
    path.write_text(json.dumps({**to_dict(TrainConfig(dataset="digits")), "image_size": "big"}))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2


def test_fixed_size_dataset_refuses_another_size_in_one_sentence():
    assert load_dataset("digits", "train", image_size=8).image_size == (8, 8)  # its own size is fine
    with pytest.raises(DatasetError, match=r"digits has 8x8 px images and cannot be trained or embedded at 32 px") as exc:
        load_dataset("digits", "train", image_size=32)
    assert str(exc.value).count(". ") == 0
    for bad in (4, 2048, 64.0, "64", True):
        with pytest.raises(DatasetError):
            load_dataset("digits", "train", image_size=bad)


def test_train_on_a_fixed_size_dataset_at_another_size_exits_2(tmp_path, capsys, isolated_cache):
    assert main(["train", "--dataset", "digits", "--image-size", "32", "--epochs", "0.01", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "8x8 px" in capsys.readouterr().err


# --------------------------------------------------------------------------- config.json and flags


def test_image_size_round_trips_through_config_json(tmp_path):
    cfg = TrainConfig(dataset="folder:/data/x", image_size=96, encoder="resnet18", batch_size=64)
    assert from_dict(TrainConfig, json.loads(save_json(cfg))) == cfg
    write_config(tmp_path, cfg)
    assert read_config(tmp_path) == cfg and read_config(tmp_path).image_size == 96


def test_old_config_without_image_size_loads(tmp_path):
    old = to_dict(TrainConfig(dataset="digits"))
    del old["image_size"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = read_config(tmp_path)
    assert cfg.image_size is None and cfg.dataset == "digits"
    assert trained_image_size(tmp_path) is None


def test_train_flags_emit_image_size_and_parse_back():
    cfg = TrainConfig(dataset="folder:/data/x", image_size=128)
    flags = train_flags(cfg)
    assert flags[flags.index("--image-size") + 1] == "128"
    assert config_from_args(build_parser().parse_args(["train", *flags])) == cfg
    assert "--image-size" not in train_flags(TrainConfig())


# --------------------------------------------------------------------------- suggestions


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_suggested_recipe_for_each_size(size, device):
    recipe = suggested_recipe(size, device)
    assert isinstance(recipe, Recipe) and recipe.encoder in ENCODERS
    assert recipe.batch_size in PAGE_BATCHES and recipe.encoder_width in PAGE_WIDTHS and 0 < recipe.lr < 0.1
    assert recipe.reason and recipe.reason[0].islower() and not recipe.reason.endswith(".")  # one clause, shown after "—"
    if device == "cuda":
        assert "literature" in recipe.reason


def test_suggested_recipe_picks_the_nearest_band_and_smaller_batches_for_larger_images():
    for device in ("cpu", "cuda"):
        assert suggested_recipe(40, device) == suggested_recipe(32, device)
        assert suggested_recipe(200, device) == suggested_recipe(224, device)
        assert suggested_recipe(1024, device) == suggested_recipe(224, device)
        assert suggested_recipe(8, device) == suggested_recipe(32, device)
    cpu = [suggested_recipe(s, "cpu").batch_size for s in IMAGE_SIZES]
    assert cpu == sorted(cpu, reverse=True) and cpu[-1] < cpu[0]
    assert suggested_recipe(64, "cuda").encoder == "resnet18-cifar" and suggested_recipe(96, "cuda").encoder == "resnet18"
    assert suggested_recipe(224, "cuda").batch_size >= 256 and suggested_recipe(224, "cuda:1") == suggested_recipe(224, "cuda")


# --------------------------------------------------------------------------- the augmentation stays batched


def test_default_policy_augments_a_224px_batch_at_once():
    x = torch.randint(0, 256, (8, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    policy = parse_policy(TrainConfig().augment)
    y, params = BatchAugment(policy)(x, torch.Generator().manual_seed(1), return_params=True)
    assert y.shape == (8, 3, 224, 224) and y.dtype == torch.float32 and 0 <= float(y.min()) and float(y.max()) <= 1
    assert all(v.shape[0] == 8 for v in params.values())       # parameters drawn per image, in one call
    assert len({tuple(c.tolist()) for c in params["crop"]}) > 1  # each image its own crop
    views = MultiViewAugment(policy, n_views=2)(x.float().div(255).contiguous(memory_format=torch.channels_last),
                                                generator=torch.Generator().manual_seed(2))
    assert len(views) == 2 and all(v.shape == (8, 3, 224, 224) for v in views)


# --------------------------------------------------------------------------- the Train page


def test_train_page_offers_the_folder_with_an_image_size_and_a_suggestion(app_env, colour_folder, monkeypatch):
    monkeypatch.setenv("SSL_VIZ_DEFAULT_DATASET", f"folder:{colour_folder}")
    at = AppTest.from_file("../pages/train.py", default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    picker = at.selectbox(key="tr_dataset")
    assert picker.value == f"folder:{colour_folder}" and "colours" in picker.options
    assert at.select_slider(key="tr_image_size").value == 64
    recipe = suggested_recipe(64, "cpu")
    caption = next(c.value for c in at.caption if c.value.startswith("For 64 px images"))
    assert recipe.encoder in caption and f"batch {recipe.batch_size}" in caption
    assert at.selectbox(key="tr_encoder").value == recipe.encoder and at.select_slider(key="tr_batch").value == recipe.batch_size
    assert "--image-size 64" in at.code[0].value

    at.select_slider(key="tr_image_size").set_value(224).run()
    big = suggested_recipe(224, "cpu")
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.value.startswith("For 224 px images on the CPU: " + big.encoder) for c in at.caption)
    assert at.selectbox(key="tr_encoder").value == big.encoder and at.select_slider(key="tr_batch").value == big.batch_size
    assert "--image-size 224" in at.code[0].value

    at.select_slider(key="tr_batch").set_value(16).run()  # an explicit choice survives a new suggestion
    at.select_slider(key="tr_image_size").set_value(32).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.select_slider(key="tr_batch").value == 16
    assert at.selectbox(key="tr_encoder").value == suggested_recipe(32, "cpu").encoder


def test_train_page_with_a_built_in_dataset_has_no_image_size(app_env):
    at = AppTest.from_file("../pages/train.py", default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [s for s in at.select_slider if s.key == "tr_image_size"]
    assert "--image-size" not in at.code[0].value
