"""Per-method presets: what the CLI, the Train page and the zoo start from; BYOL's predictor learning rate."""

from dataclasses import replace

import pytest
import torch

from ssl_viz.cli import build_parser, config_from_args, train_flags
from ssl_viz.config import METHOD_PRESETS, MethodConfig, TrainConfig, method_preset
from ssl_viz.jobs.validate import ConfigError, validate_config
from ssl_viz.methods import METHODS
from ssl_viz.train import Trainer


def test_every_method_has_a_preset_that_validates():
    assert set(METHOD_PRESETS) == set(METHODS)
    for method in METHODS:
        cfg = method_preset(method)
        assert cfg.method == method
        validate_config(cfg)


def test_a_preset_sits_between_the_defaults_and_the_callers_changes(monkeypatch):
    monkeypatch.setitem(METHOD_PRESETS, "byol", {"lr": 1e-3, "method_cfg": {"momentum": 0.97, "predictor_lr_scale": 10.0}})
    cfg = method_preset("byol", batch_size=64, method_cfg={"momentum": 0.9})
    assert (cfg.lr, cfg.batch_size) == (1e-3, 64)
    assert (cfg.method_cfg.momentum, cfg.method_cfg.predictor_lr_scale) == (0.9, 10.0)
    assert cfg.method_cfg.temperature == MethodConfig().temperature
    assert method_preset("simclr") == replace(TrainConfig(), method="simclr")


def test_the_cli_starts_from_the_methods_preset_and_train_flags_round_trip(monkeypatch):
    monkeypatch.setitem(METHOD_PRESETS, "byol", {"lr": 1e-3, "method_cfg": {"momentum": 0.97}})
    parse = build_parser().parse_args
    cfg = config_from_args(parse(["train", "--method", "byol"]))
    assert (cfg.lr, cfg.method_cfg.momentum) == (1e-3, 0.97)
    back_to_default = replace(cfg, method_cfg=replace(cfg.method_cfg, momentum=MethodConfig().momentum))
    flags = train_flags(back_to_default)
    assert flags[flags.index("--momentum") + 1] == repr(MethodConfig().momentum)   # differs from the preset: spelled out
    assert config_from_args(parse(["train", *flags])) == back_to_default
    assert "--lr" not in train_flags(cfg)                                          # the preset's own value: implied


def test_the_zoo_spells_out_each_presets_flags(monkeypatch):
    from ssl_viz import zoo

    monkeypatch.setitem(METHOD_PRESETS, "moco", {"method_cfg": {"temperature": 0.1}})
    flags = zoo.preset_flags("moco")
    assert flags[:2] == ("--method", "moco") and flags[flags.index("--temperature") + 1] == "0.1"
    assert config_from_args(build_parser().parse_args(["train", *flags])) == method_preset("moco")


def test_a_preset_that_changes_the_cpu_recipe_replaces_its_value_once(monkeypatch):
    from ssl_viz import zoo

    monkeypatch.setitem(METHOD_PRESETS, "byol", {"batch_size": 64, "lr": 4e-3, "compile": True,
                                                  "method_cfg": {"predictor_lr_scale": 10.0}})
    flags = zoo.preset_flags("byol")
    assert flags.count("--batch-size") == 1 and flags[flags.index("--batch-size") + 1] == "64"
    assert flags.count("--lr") == 1 and flags[flags.index("--lr") + 1] == "0.004"
    assert "--compile" in flags and flags[flags.index("--predictor-lr-scale") + 1] == "10.0"
    assert config_from_args(build_parser().parse_args(["train", *flags])) == method_preset("byol")


def test_byols_predictor_trains_at_its_own_multiple_of_the_schedules_lr(tmp_path):
    cfg = TrainConfig(method="byol", dataset="digits", encoder_width=4, batch_size=32, epochs=0.1, knn_every=0, lr=2e-3,
                      method_cfg=MethodConfig(proj_dim=16, proj_hidden=32, predictor_hidden=32, predictor_lr_scale=10.0))
    trainer = Trainer.from_config(cfg, tmp_path / "run", callbacks=[])
    pred = {id(p) for p in trainer.method.predictor.parameters()}
    groups = trainer.optimizer.param_groups
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in trainer.method.parameters() if p.requires_grad)
    trainer.state.step = 0
    logs = trainer.train_step(next(trainer.batches()))
    for g in groups:
        in_pred = {id(p) in pred for p in g["params"]}
        assert len(in_pred) == 1
        assert g["lr"] == pytest.approx(logs["lr"] * (10.0 if in_pred == {True} else 1.0))
    assert torch.isfinite(torch.tensor(logs["loss"]))


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_a_bad_predictor_lr_scale_is_refused(scale):
    with pytest.raises(ConfigError, match="--predictor-lr-scale"):
        validate_config(TrainConfig(method="byol", dataset="digits", method_cfg=MethodConfig(predictor_lr_scale=scale)))
