"""The model zoo: the encoders shipped in ``models/``, their recipes, and the command that rebuilds them.

    python -m ssl_viz.zoo [--only simclr-fashion-mnist,...] [--out models] [--budget-scale 1.0] [--list]

(``make models`` runs it.) Each entry trains with ``python -m ssl_viz train`` for a
fixed time budget, its kNN monitor on the full protocol (so ``metrics.jsonl`` holds the
accuracy-vs-seconds curve), then:

1. evaluates by the field's protocol on the full Fashion-MNIST test set: weighted kNN
   top-1 (``KNN_K`` = 200, ``KNN_TEMPERATURE`` = 0.1 of :mod:`ssl_viz.evaluate`, the 60k training set as the
   bank), a linear probe, and alignment / uniformity (Wang & Isola 2020), written into ``card.json`` under ``evaluation``;
2. ships the run (:func:`ssl_viz.checkpoint.ship_run`): encoder and heads only,
   float16 for the ViTs, no resumable trainer state, so each model stays a few MB.

The SSL encoders are the CPU time-to-quality runs (``bench.time_to_quality`` reads
their curves); the ViTs want a GPU (on 2 CPU cores a ViT step is about 15x slower
than the small CNN's, and their budgets would buy little training).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ssl_viz.paths import models_dir
from ssl_viz.rundir import CARD, CHECKPOINT, EVOLUTION, LOG, STATUS

TIME_BUDGET = 300.0


@dataclass(frozen=True)
class ZooEntry:
    """One shipped model: the ``train`` flags, its time budget, the device it was made for."""

    name: str
    flags: tuple[str, ...]
    budget: float = TIME_BUDGET
    device: str = "cpu"
    half: bool = False
    knn_every: int = 400
    dataset: str = "fashion-mnist"

    def command(self, out: Path, budget_scale: float = 1.0) -> list[str]:
        return [sys.executable, "-m", "ssl_viz", "train", "--dataset", self.dataset, *self.flags,
                "--time-budget", f"{self.budget * budget_scale:g}", "--device", self.device,
                "--knn-every", str(self.knn_every), "--knn-samples", "0", "--out", str(out), "--quiet"]


VIT = ("--encoder", "vit-tiny", "--batch-size", "512", "--lr", "1e-3", "--weight-decay", "0.05")
VIT_AUGMENT = "simclr+crop_scale=0.5:1.0,jitter_strength=1.0"


RECIPE_FIELDS = ("encoder_width", "batch_size", "lr", "augment")  # spelled in every zoo command, default or not


def recipe_flags(cfg) -> tuple[str, ...]:
    """``--method``, ``--encoder``, the :data:`RECIPE_FIELDS` and whatever else ``cfg`` changes from the defaults, as
    ``python -m ssl_viz train`` flags: a card's command shows the whole recipe. No ``--dataset`` (each entry names its
    own) and no ``--channels-last`` (the default)."""
    from ssl_viz.cli import train_flags
    from ssl_viz.config import TrainConfig

    flags = train_flags(cfg, base=TrainConfig(), always=RECIPE_FIELDS)
    at = flags.index("--dataset")
    del flags[at:at + 2]
    return tuple(f for f in flags if f != "--channels-last")


def preset_flags(method: str) -> tuple[str, ...]:
    """:func:`recipe_flags` of the method's preset (ssl_viz.config.METHOD_PRESETS)."""
    from ssl_viz.config import method_preset

    return recipe_flags(method_preset(method))


def _default_recipe() -> tuple[str, ...]:
    from ssl_viz.config import TrainConfig

    return recipe_flags(TrainConfig())[2:]  # without "--method simclr"


# The tuned CPU recipe, TrainConfig's defaults spelled out (bench/recipe_search.py, bench/RESULTS.md).
CPU_RECIPE = _default_recipe()


ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry("simclr-fashion-mnist", preset_flags("simclr")),
    ZooEntry("moco-fashion-mnist", preset_flags("moco")),
    ZooEntry("swav-fashion-mnist", preset_flags("swav")),
    ZooEntry("byol-fashion-mnist", preset_flags("byol")),
    ZooEntry("memory-bank-fashion-mnist", preset_flags("memory_bank")),
    ZooEntry("supervised-fashion-mnist", preset_flags("supervised")),
    # colour, with a 7x7 first layer: the Kernels page's edges and colour blobs (no grayscale: colour stays informative)
    ZooEntry("simclr-k7-photo-patches", ("--method", "simclr", "--encoder", "small-cnn-k7", "--width", "16", "--batch-size", "256",
                                         "--lr", "8e-3", "--augment", "simclr-small+grayscale_p=0.0"), dataset="photo-patches"),
    # trained together on one GPU (two processes sharing it)
    ZooEntry("simclr-vit-tiny-fashion-mnist", ("--method", "simclr", *VIT, "--temperature", "0.2", "--augment", VIT_AUGMENT),
             budget=240, device="cuda", half=True, knn_every=300),
    ZooEntry("supervised-vit-tiny-fashion-mnist", ("--method", "supervised", *VIT, "--augment", VIT_AUGMENT),
             budget=150, device="cuda", half=True, knn_every=300),
]}


def evaluate(run_dir: Path, dataset: str = "fashion-mnist", device: str = "auto") -> dict:
    """The full evaluation protocol of a run (kNN, linear probe, alignment, uniformity), rounded for the card."""
    from ssl_viz.checkpoint import load_model
    from ssl_viz.data import load_dataset
    from ssl_viz.evaluate import evaluate_model

    result = evaluate_model(load_model(run_dir), load_dataset(dataset, "train"), load_dataset(dataset, "test"), device=device)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


def build(entry: ZooEntry, out_root: Path, budget_scale: float = 1.0, device: str | None = None) -> dict:
    """Train, evaluate and ship one entry into ``out_root / entry.name``; returns its evaluation."""
    tmp = out_root / f".{entry.name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = entry.command(tmp, budget_scale)
    if device:
        cmd[cmd.index("--device") + 1] = device
    subprocess.run(cmd, check=True)
    return finish(entry, tmp, out_root)


def finish(entry: ZooEntry, trained: Path, out_root: Path) -> dict:
    """Evaluate and ship a trained run (made here or on another machine) as ``out_root / entry.name``.

    The card gains ``evaluation`` (and ``metrics``), the zoo command and, where it differed,
    the command that actually ran (``trained_with``).
    """
    from ssl_viz.checkpoint import ship_run
    from ssl_viz.evaluate import KNN_K, KNN_TEMPERATURE
    from ssl_viz.fileio import atomic_write_json, read_json

    out = out_root / entry.name
    start = time.perf_counter()
    result = evaluate(trained, entry.dataset)
    ship_run(trained, half=entry.half)
    for name in (STATUS, LOG, EVOLUTION):
        (trained / name).unlink(missing_ok=True)
    card = read_json(trained / CARD)
    card["evaluation"] = {**result, "command": f"python -m ssl_viz evaluate --checkpoint models/{entry.name} --dataset {entry.dataset}",
                          "split": f"full test set ({result['n_test']}), full train set ({result['n_train']}) as kNN bank (k={KNN_K}, T={KNN_TEMPERATURE:g})"}
    card["metrics"] = {k: result[k] for k in ("knn_top1", "linear_top1", "alignment", "uniformity") if k in result}
    if card.get("command"):
        card["trained_with"] = card["command"]  # what actually ran (e.g. on a GPU machine)
    card["command"] = "python " + shlex.join(entry.command(Path("models") / entry.name)[1:])
    card["zoo"] = {"entry": entry.name, "made_for": entry.device, "half_precision": entry.half,
                   "shipped": "encoder and heads only (training-only state dropped)"}
    atomic_write_json(trained / CARD, card)
    if trained.resolve() != out.resolve():
        shutil.rmtree(out, ignore_errors=True)
        trained.rename(out)
    print(f"{entry.name}: {json.dumps(result)} (evaluated in {time.perf_counter() - start:.0f} s)", flush=True)
    return result


CPU_ENTRIES = tuple(name for name, e in ZOO.items() if e.device == "cpu" and e.dataset == "fashion-mnist")  # the time-to-quality runs


def markdown_table(root: Path) -> str:
    """The shipped zoo models of ``root`` as a Markdown table (for the README)."""
    lines = ["| model | method | encoder | trained on | seconds | kNN top-1 | linear | alignment | uniformity | size |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in ZOO:
        card_path = root / name / CARD
        if not card_path.exists():
            continue
        card = json.loads(card_path.read_text())
        ev = card.get("evaluation", {})
        size = (root / name / CHECKPOINT).stat().st_size / 2**20
        device = "2 CPU cores" if card.get("device") == "cpu" else card.get("device")
        lines.append(f"| `{name}` | {card['method']} | {card['encoder']} | {device} | {card['seconds']:.0f} | {ev.get('knn_top1', float('nan')):.3f} | "
                     f"{ev.get('linear_top1', float('nan')):.3f} | {ev.get('alignment', float('nan')):.3f} | {ev.get('uniformity', float('nan')):.3f} | "
                     f"{size:.1f} MB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl_viz.zoo", description="Rebuild the shipped models.")
    parser.add_argument("--only", default="", help="comma-separated entry names (default: all)")
    parser.add_argument("--out", type=Path, default=models_dir())
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every time budget (e.g. 0.1 for a quick check)")
    parser.add_argument("--device", help="override each entry's device")
    parser.add_argument("--list", action="store_true", help="print the entries and their commands")
    parser.add_argument("--table", action="store_true", help="print the built models of --out as a Markdown table")
    parser.add_argument("--finish", type=Path, metavar="RUN_DIR", help="evaluate and ship a run trained elsewhere as the one --only entry")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(args.out))
        return 0
    names = [n for n in args.only.split(",") if n] or list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        print(f"unknown zoo entries {unknown}; choose from {', '.join(ZOO)}", file=sys.stderr)
        return 2
    if args.finish:
        if len(names) != 1:
            print("--finish needs exactly one --only entry", file=sys.stderr)
            return 2
        finish(ZOO[names[0]], args.finish, args.out)
        return 0
    for name in names:
        entry = ZOO[name]
        if args.list:
            print(f"{name}: {shlex.join(entry.command(args.out / name, args.budget_scale)[1:])}")
            continue
        if args.device is None and entry.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                print(f"{name}: skipped, made on a GPU (the shipped one stays); `--only {name} --device cpu` trains it here, "
                      "but a ViT step on a laptop CPU is ~15x slower than the small CNN's and the budget buys little", file=sys.stderr)
                continue
        build(entry, args.out, args.budget_scale, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
