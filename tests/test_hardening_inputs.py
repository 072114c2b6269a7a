"""Issue 15, kinds 1, 2 and 4: inputs people really have, through the CLI, the upload paths and the pages.

1. A checkpoint file of the wrong architecture is refused with one line (exit 2) unless a partial load is
   allowed; the CLI always shows the load report of a checkpoint file.
2. The same image file gives the same pixels wherever it enters (folder dataset, Retrieval upload,
   Feature-maps upload), and an uploaded bank image finds itself first.
4. Numbers that are not numbers: bad numeric flags, NaN or overflowing embeddings, strict JSON.
"""

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_viz import cli
from ssl_viz.analysis.feature_maps import load_image
from ssl_viz.analysis.retrieval import Retriever, read_query_image
from ssl_viz.checkpoint import read_state_dict, save_state
from ssl_viz.data import folder
from ssl_viz.encoders import build_encoder
from ssl_viz.evaluate import embed_dataset


def run_cli(capsys, *args) -> tuple[int, str, list[str]]:
    """``python -m ssl_viz ARGS`` in this process: (exit status, stdout, non-empty stderr lines)."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def strict_loads(text: str):
    """json.loads that fails on NaN / Infinity (Python's json accepts them; RFC 8259 does not)."""
    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# ============================================================================ 1. wrong-architecture checkpoints


def moco_v2_resnet50_file(path):
    """A MoCo v2 checkpoint of a ResNet-50 (``module.encoder_q.`` + an MLP head ``fc.0`` / ``fc.2``), with the
    real key names and shapes but zero-stride tensors, so the file is ~100 kB instead of 100 MB."""
    import torchvision

    with torch.device("meta"):
        body = torchvision.models.resnet50().state_dict()
    shapes = {k: (v.shape, v.dtype) for k, v in body.items() if not k.startswith("fc.")}
    shapes |= {"fc.0.weight": ((2048, 2048), torch.float32), "fc.0.bias": ((2048,), torch.float32),
               "fc.2.weight": ((128, 2048), torch.float32), "fc.2.bias": ((128,), torch.float32)}
    state = {f"module.encoder_q.{k}": torch.full((), 1.0 if k.endswith("running_var") else 0.0, dtype=dtype).expand(shape)
             for k, (shape, dtype) in shapes.items()}
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": state, "optimizer": {}}, path)
    return path


def test_moco_resnet50_file_read_as_resnet18_is_refused_in_one_line(tmp_path, capsys):
    path = moco_v2_resnet50_file(tmp_path / "moco_v2_800ep_pretrain.pth.tar")
    out = tmp_path / "emb.npz"
    for command in (["evaluate"], ["embed", "--out", out], ["diagnose", "--out", tmp_path / "d.json", "--n-train", "50", "--n-test", "50"]):
        code, stdout, err = run_cli(capsys, *command, "--checkpoint", path, "--encoder", "resnet18", "--dataset", "digits")
        assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
        line = err[0]
        assert "23 of the encoder's 120 tensors are missing" in line, line
        assert "layer1.0.conv1.weight" in line and "225 tensors of the file are unexpected" in line
        assert "--allow-partial" in line and "module.encoder_q layout" in line
        assert not stdout.strip().startswith("{")  # no figures printed
    assert not out.exists() and not (tmp_path / "d.json").exists()


def test_partial_load_when_asked_prints_the_report(tmp_path, capsys):
    path = moco_v2_resnet50_file(tmp_path / "moco.pth.tar")
    out = tmp_path / "emb.npz"
    code, stdout, err = run_cli(capsys, "embed", "--checkpoint", path, "--encoder", "resnet18", "--dataset", "digits",
                                "--out", out, "--allow-partial")
    assert code == 0, err
    assert len(err) == 1 and "97 tensors loaded; 23 missing (e.g. layer1.0.conv1.weight" in err[0] and "225 unexpected" in err[0]
    assert np.load(out)["embeddings"].shape == (449, 512)


def test_a_checkpoint_file_that_fits_shows_its_report(tmp_path, capsys):
    from safetensors.torch import save_file

    state = {f"_orig_mod.{k}": v.clone().contiguous() for k, v in build_encoder("small-cnn", 1, 8).body.state_dict().items()}
    save_file(state, str(tmp_path / "compiled.safetensors"))
    code, stdout, err = run_cli(capsys, "evaluate", "--checkpoint", tmp_path / "compiled.safetensors", "--encoder", "small-cnn",
                                "--dataset", "digits", "--max-train", "300")
    assert code == 0, err
    assert err == [f"loaded compiled.safetensors as small-cnn: plain (torch.compile) layout: {len(state)} tensors loaded"]
    assert strict_loads(stdout.strip().splitlines()[-1])["n_train"] == 300


# ============================================================================ 2. one decoding path for every image


def _png16(path):
    """A 16-bit grayscale PNG (mode I;16): left half 64 * 257, right half 128 * 257 (dark and mid grey)."""
    array = np.full((20, 24), 128 * 257, dtype=np.uint16)
    array[:, :12] = 64 * 257
    Image.fromarray(array).save(path)
    assert Image.open(path).mode == "I;16"


def _rgba(path):
    """Transparent background (black with alpha 0) around an opaque red square."""
    array = np.zeros((24, 24, 4), dtype=np.uint8)
    array[8:16, 8:16] = (220, 20, 20, 255)
    Image.fromarray(array, "RGBA").save(path)


def _exif_rotated(path):
    """A 40x20 grayscale JPEG, left half black and right half white, whose EXIF says: rotate 90 degrees clockwise."""
    array = np.full((20, 40), 255, dtype=np.uint8)
    array[:, :20] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array, "L").save(path, format="JPEG", quality=95, exif=exif.tobytes())


def _palette(path):
    """A palette PNG: index 0 (200, 30, 60) on the left, index 1 (10, 120, 250) on the right."""
    img = Image.fromarray(np.repeat(np.array([[0] * 10 + [1] * 10], dtype=np.uint8), 20, axis=0), "P")
    img.putpalette([200, 30, 60, 10, 120, 250] + [0, 0, 0] * 254)
    img.save(path)


CASES = {"deep.png": _png16, "clear.png": _rgba, "rotated.jpg": _exif_rotated, "palette.png": _palette}


def check_values(name: str, x: np.ndarray) -> None:
    """The right pixels of each case: uint8 ``[C, 16, 16]``."""
    if name == "deep.png":  # 16-bit scaled to 8 bits, not clipped to white
        assert x.shape[0] == 1 and abs(int(x[0, 8, 1]) - 64) <= 1 and abs(int(x[0, 8, 14]) - 128) <= 1, x[0, 8]
    elif name == "clear.png":  # transparent background over white, as the dataset loader always did
        assert x.shape[0] == 3 and tuple(x[:, 0, 0]) == (255, 255, 255) and tuple(x[:, 8, 8]) == (220, 20, 20)
    elif name == "rotated.jpg":  # EXIF applied: the black half is on top
        assert x.shape[0] == 1 and x[0, :4].mean() < 40 and x[0, -4:].mean() > 215, x[0, :, 0]
    else:
        assert x.shape[0] == 3 and tuple(x[:, 8, 1]) == (200, 30, 60) and tuple(x[:, 8, 14]) == (10, 120, 250)


@pytest.mark.parametrize("name", list(CASES))
def test_upload_and_dataset_paths_give_identical_right_pixels(tmp_path, name):
    CASES[name](tmp_path / name)
    ds = folder.load("train", path=tmp_path, size=16)
    from_dataset = ds.images[0].numpy()
    data = (tmp_path / name).read_bytes()
    uploaded = read_query_image(io.BytesIO(data), ds.channels, ds.image_size)[0].numpy()  # Retrieval (and ui.uploads)
    feature_maps = (load_image(io.BytesIO(data), ds.channels, ds.image_size)[0] * 255).round().to(torch.uint8).numpy()
    check_values(name, uploaded)
    np.testing.assert_array_equal(uploaded, from_dataset)
    np.testing.assert_array_equal(feature_maps, from_dataset)


def _bank_folder(root):
    """Ten distinct images of every kind above plus RGB photos of different sizes and a greyscale one."""
    root.mkdir()
    for name, make in CASES.items():
        make(root / name)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(30, 40), (40, 30), (33, 33), (50, 20), (16, 16)]):
        yy, xx = np.mgrid[0:h, 0:w]
        array = np.stack([(xx * 255 // w), (yy * 255 // h), np.full((h, w), 40 * i)], -1) + rng.integers(0, 30, (h, w, 3))
        Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(root / f"photo{i}.{'png' if i % 2 else 'jpg'}")
    Image.fromarray(rng.integers(0, 255, (25, 25), dtype=np.uint8), "L").save(root / "gray.bmp")
    return root


def test_an_uploaded_bank_image_is_its_own_top1_neighbour(tmp_path):
    root = _bank_folder(tmp_path / "bank")
    ds = folder.load("train", path=root, size=32)
    encoder = build_encoder("small-cnn", in_channels=ds.channels, width=8).eval()
    bank = embed_dataset(encoder, ds.images)
    retriever = Retriever(k=3).fit(bank)
    found = 0
    for path in sorted(root.iterdir()):
        query = read_query_image(io.BytesIO(path.read_bytes()), ds.channels, ds.image_size)
        same = [j for j in range(len(ds)) if torch.equal(ds.images[j], query[0])]
        if not same:
            continue  # in the test split
        found += 1
        with torch.inference_mode():
            scores, idx = retriever.query(encoder(query.float() / 255))
        assert idx[0, 0] == same[0] and scores[0, 0] > 0.999, (path.name, scores[0], idx[0], same)
    assert found == len(ds) >= 8  # every bank image was found from its uploaded file


# ============================================================================ 4. numbers that are not numbers


@pytest.mark.parametrize("flags, words", [
    (["--k", "0"], ["--k must be at least 1", "got 0"]),
    (["--k", "-3"], ["--k must be at least 1", "got -3"]),
    (["--knn-temperature", "0"], ["--knn-temperature must be a positive number"]),
    (["--knn-temperature", "-0.1"], ["--knn-temperature must be a positive number"]),
    (["--knn-temperature", "nan"], ["--knn-temperature must be a positive number", "nan"]),
    (["--knn-temperature", "inf"], ["--knn-temperature must be a positive number", "inf"]),
    (["--max-train", "0"], ["--max-train must be at least 1"]),
])
def test_bad_numeric_flags_of_evaluate_are_one_line(tiny_model_dir, capsys, flags, words):
    code, out, err = run_cli(capsys, "evaluate", "--checkpoint", tiny_model_dir, "--dataset", "digits", *flags)
    assert code == 2 and len(err) == 1 and out == "", err
    assert all(w.lower() in err[0].lower() for w in words), err[0]


def corrupt_copy(tiny_model_dir, dest, kind: str):
    """The tiny SimCLR run with damaged weights: ``nan`` (huge but finite first convolution: NaN embeddings),
    ``overflow`` (last BatchNorm scale 1e25: finite embeddings whose norm overflows float32) or
    ``negative-var`` (a negative BatchNorm running variance)."""
    shutil.copytree(tiny_model_dir, dest)
    state = read_state_dict(dest / "checkpoint.safetensors")
    if kind == "nan":
        state["encoder.body.block1.0.weight"] = torch.full_like(state["encoder.body.block1.0.weight"], 3e38)
    elif kind == "overflow":
        state["encoder.body.block4.1.weight"] = torch.full_like(state["encoder.body.block4.1.weight"], 1e25)
    else:
        state["encoder.body.block2.1.running_var"] = -torch.ones_like(state["encoder.body.block2.1.running_var"])
    save_state(dest, state)
    return dest


@pytest.mark.parametrize("kind, words", [
    ("nan", ["rows are not finite", "449 of 449", "corrupt"]),
    ("overflow", ["too large to normalise in float32", "overflow"]),
    ("negative-var", ["negative running variance", "block2.1.running_var"]),
])
def test_corrupt_models_end_evaluate_and_embed_with_one_line_and_no_file(tiny_model_dir, tmp_path, capsys, kind, words):
    model = corrupt_copy(tiny_model_dir, tmp_path / kind, kind)
    out = tmp_path / "out" / "emb.npz"
    code, stdout, err = run_cli(capsys, "embed", "--checkpoint", model, "--dataset", "digits", "--out", out)
    assert code == 2 and len(err) == 1 and stdout == "", err
    assert all(w.lower() in err[0].lower() for w in words), err[0]
    assert not out.exists() and (not out.parent.exists() or not list(out.parent.iterdir()))  # no file, no temp file
    code, stdout, err = run_cli(capsys, "evaluate", "--checkpoint", model, "--dataset", "digits")
    assert code == 2 and len(err) == 1 and stdout == "", err
    assert all(w.lower() in err[0].lower() for w in words if w != "449 of 449"), err[0]


def test_strict_json_maps_non_numbers_to_null():
    assert cli.strict_json({"a": float("nan"), "b": [float("inf"), 1.5, -float("inf")], "c": {"d": 2}}) == \
        '{"a": null, "b": [null, 1.5, null], "c": {"d": 2}}'


def test_evaluate_of_a_one_image_test_set_prints_strict_json(tiny_model_dir, tmp_path, capsys):
    """One test image: uniformity has no pairs (NaN), printed as null, never as a bare NaN."""
    for name in ("a", "b"):
        Image.fromarray(np.random.default_rng(len(name) + ord(name)).integers(0, 255, (12, 12), dtype=np.uint8), "L").save(
            tmp_path / f"{name}.png")
    code, out, err = run_cli(capsys, "evaluate", "--checkpoint", tiny_model_dir, "--dataset", f"folder:{tmp_path}")
    assert code == 0, err
    result = strict_loads(out.strip().splitlines()[-1])
    assert result["n_test"] == 1 and result["uniformity"] is None


def test_embeddings_page_shows_one_message_for_nan_embeddings(app_env, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    model = corrupt_copy(app_env, tmp_path / "nan-model", "nan")
    monkeypatch.setenv("SSL_VIZ_DEFAULT_MODEL", str(model))
    at = AppTest.from_file("../pages/embeddings.py", default_timeout=120)
    at.session_state["emb_method"] = "PCA"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "not finite" in at.error[0].value, [e.value for e in at.error]
    assert not at.get("plotly_chart")


# ============================================================================ 7. kNN memory: the benchmark's cases


def test_memory_bench_knn_case_and_table():
    from bench import memory

    row = memory.run_case("knn-10k", model="", device="cpu")
    assert row["exit"] == 0 and "10,000 classes" in row["detail"] and row["peak_mib"] > 0
    text = memory.table([row], "cpu")
    assert text.splitlines()[0].startswith("| case (cpu) | peak RSS (MiB)") and "| knn-10k |" in text


def test_a_folder_of_more_entries_than_the_walk_allows_is_refused_in_one_sentence(tmp_path):
    """The link walk has a bound (MAX_TREE_ENTRIES, far above the 200,000-image folders the app must take): past it,
    one sentence naming the bound, never a walk without end."""
    from ssl_viz.safety import MAX_TREE_ENTRIES, UnsafeInputError, check_tree

    assert MAX_TREE_ENTRIES >= 1_000_000
    for i in range(12):
        (tmp_path / f"{i}.png").write_bytes(b"x")
    check_tree(tmp_path, [tmp_path], max_entries=12)
    with pytest.raises(UnsafeInputError, match="more than 11 files"):
        check_tree(tmp_path, [tmp_path], max_entries=11)
