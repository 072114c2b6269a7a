"""Multi-crop (Caron et al. 2020) for SimCLR: the loss against the naive formula, the views the Trainer makes, the refusals."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ssl_viz.config import MethodConfig, TrainConfig
from ssl_viz.encoders import build_encoder
from ssl_viz.jobs.validate import ConfigError, validate_config
from ssl_viz.methods import build_method
from ssl_viz.train import Trainer, TrainingError
from tests.test_losses import naive_nt_xent

CFG = MethodConfig(proj_dim=16, proj_hidden=32, temperature=0.3)


def simclr():
    torch.manual_seed(0)
    return build_method("simclr", build_encoder("small-cnn", in_channels=1, width=4), CFG, num_samples=8).double().eval()


def test_simclr_with_small_crops_averages_nt_xent_over_large_large_and_large_small_pairs():
    method = simclr()
    g = torch.Generator().manual_seed(1)
    views = [torch.rand(6, 1, 16, 16, generator=g, dtype=torch.float64) for _ in range(2)]
    views += [torch.rand(6, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    loss = method(views, torch.arange(6)).loss
    with torch.no_grad():
        z = [method.projector(method.encoder(v)) for v in views]
    pairs = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3)]   # small crops (2, 3) are never paired with each other
    expected = sum(naive_nt_xent(z[i], z[j], CFG.temperature) for i, j in pairs) / len(pairs)
    assert loss.item() == pytest.approx(expected, abs=1e-9)


def test_simclr_with_two_views_is_plain_nt_xent():
    method = simclr()
    g = torch.Generator().manual_seed(2)
    views = [torch.rand(5, 1, 16, 16, generator=g, dtype=torch.float64) for _ in range(2)]
    loss = method(views, torch.arange(5)).loss
    with torch.no_grad():
        z1, z2 = (method.projector(method.encoder(v)) for v in views)
    assert loss.item() == pytest.approx(naive_nt_xent(z1, z2, CFG.temperature), abs=1e-9)


def test_simclr_refuses_one_view():
    with pytest.raises(ValueError, match="at least 2 views"):
        simclr()([torch.rand(4, 1, 16, 16, dtype=torch.float64)], torch.arange(4))


def test_the_trainer_makes_the_small_crops_and_trains_on_them(tmp_path):
    cfg = TrainConfig(dataset="digits", encoder_width=4, batch_size=32, epochs=0.2, knn_every=0, small_crops=3,
                      small_crop_size=6, small_crop_scale=(0.3, 0.6), method_cfg=CFG)
    trainer = Trainer.from_config(cfg, tmp_path / "run", callbacks=[])
    views = trainer.augment(torch.rand(4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert [tuple(v.shape[-2:]) for v in views] == [(8, 8), (8, 8), (6, 6), (6, 6), (6, 6)]
    state = trainer.fit()
    assert state.stop_reason == "done" and state.step > 0
    assert torch.isfinite(torch.tensor(state.last_logs["loss"]))


@pytest.mark.parametrize("method", ["moco", "byol", "memory_bank", "supervised"])
def test_small_crops_on_a_two_view_method_are_refused_in_one_sentence(method, tmp_path):
    cfg = TrainConfig(method=method, dataset="digits", small_crops=2)
    with pytest.raises(ConfigError, match="only with simclr or swav"):
        validate_config(cfg)
    with pytest.raises(TrainingError, match="two views only"):
        Trainer.from_config(cfg, tmp_path / "run", callbacks=[])


@pytest.mark.parametrize("changes, words", [({"small_crops": -1}, "--small-crops"), ({"small_crop_size": 2}, "--small-crop-size"),
                                            ({"small_crop_scale": (0.5, 0.2)}, "--small-crop-scale"),
                                            ({"small_crop_scale": (0.0, 0.2)}, "--small-crop-scale")])
def test_bad_small_crop_settings_are_refused(changes, words):
    with pytest.raises(ConfigError, match=words):
        validate_config(TrainConfig(dataset="digits", **changes))


def test_a_config_json_with_small_crops_round_trips():
    from ssl_viz.config import from_dict, to_dict

    cfg = TrainConfig(small_crops=2, small_crop_scale=(0.2, 0.5))
    back = from_dict(TrainConfig, to_dict(cfg))
    assert back == cfg and back.small_crop_scale == (0.2, 0.5)
    validate_config(back)


def test_the_cli_refuses_a_bad_small_crop_scale_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ssl_viz", "train", "--dataset", "digits", "--small-crop-scale", "0.5",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 2 and "LO:HI" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_normalised_projections_make_the_pair_loss_scale_free():
    """The pair logits normalise z: scaling one view's projections leaves the multi-crop loss unchanged."""
    method = simclr()
    z = [torch.randn(4, 16, dtype=torch.float64) for _ in range(3)]
    a = method.pair_logits(z[0], z[2])
    b = method.pair_logits(3.0 * z[0], z[2])
    assert torch.allclose(a, b) and torch.allclose(F.normalize(z[0], dim=1).norm(dim=1), torch.ones(4, dtype=torch.float64))


def test_train_flags_spell_small_crops_so_the_cli_reads_them_back():
    from ssl_viz.cli import build_parser, config_from_args, train_flags

    cfg = TrainConfig(small_crops=2, small_crop_size=12, small_crop_scale=(0.2, 0.5))
    flags = train_flags(cfg)
    assert flags[flags.index("--small-crop-scale") + 1] == "0.2:0.5"
    assert config_from_args(build_parser().parse_args(["train", *flags])) == cfg
