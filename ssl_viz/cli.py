"""Command line: ``python -m ssl_viz train | embed | evaluate | diagnose``.

``train`` builds its TrainConfig from flags, or from a JSON file (``--config``, e.g. a run's
``config.json``: every field, also those without a flag) with the flags given overriding it.

Bad arguments (unknown method, missing dataset, wrong checkpoint) end with one
clear line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from ssl_viz.config import MethodConfig, TrainConfig, from_dict, method_preset
from ssl_viz.evaluate import KNN_K, KNN_TEMPERATURE
from ssl_viz.jobs.validate import ConfigError, check_types, validate_config
from ssl_viz.rundir import CHECKPOINT, RunDirError, run_name


def image_size_arg(text: str) -> int:
    """``--image-size``'s argparse type: a whole number of pixels, 8..1024, else one sentence (exit 2)."""
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels between 8 and 1024, got {text!r}") from None
    if not 8 <= size <= 1024:
        raise argparse.ArgumentTypeError(f"must be between 8 and 1024 px, got {size}")
    return size


def area_range_arg(text: str) -> tuple[float, float]:
    """``--small-crop-scale``'s argparse type: ``LO:HI`` with 0 < LO <= HI <= 1, else one sentence (exit 2)."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LO:HI, two fractions of the image area such as 0.2:0.5, got {text!r}") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise argparse.ArgumentTypeError(f"needs 0 < LO <= HI <= 1, got {text!r}")
    return lo, hi


# flag -> (dest in TrainConfig or MethodConfig, type, help). Defaults live in ssl_viz.config only.
TRAIN_FLAGS = {
    "--method": ("method", str, "simclr, memory_bank, moco, swav, byol or supervised"),
    "--encoder": ("encoder", str, "small-cnn, small-cnn-k7, resnet18-cifar, resnet18, resnet50, mobilenet_v2, vit-tiny"),
    "--width": ("encoder_width", int, "base width of small-cnn / resnet18-cifar"),
    "--dataset": ("dataset", str, "digits, fashion-mnist, textures, shapes, photos, photo-patches, folder:PATH, "
                             "cifar10[:PATH], cifar100[:PATH], stl10[:PATH], stl10-unlabeled[:PATH]"),
    "--label": ("dataset_label", str, "factor used as label (shapes, textures)"),
    "--image-size": ("image_size", image_size_arg, "train at N x N px (folder:PATH datasets, 8..1024; default: the folder's 64)"),
    "--augment": ("augment", str, "augmentation policy, e.g. simclr or 'simclr+rotate90_p=0.5'"),
    "--small-crops": ("small_crops", int, "multi-crop: this many extra small views per image (simclr, swav; default 0)"),
    "--small-crop-size": ("small_crop_size", int, "side of the small crops in px (default 96/224 of the large views')"),
    "--small-crop-scale": ("small_crop_scale", area_range_arg, "area range of the small crops, LO:HI (default 0.05:0.14)"),
    "--epochs": ("epochs", float, "number of epochs (ignored with --time-budget)"),
    "--time-budget": ("time_budget", float, "train for this many seconds"),
    "--batch-size": ("batch_size", int, "images per step (per process under torchrun)"),
    "--optimizer": ("optimizer", str, "adamw, sgd or lars"),
    "--lr": ("lr", float, "peak learning rate"),
    "--weight-decay": ("weight_decay", float, "weight decay"),
    "--seed": ("seed", int, "random seed"),
    "--device": ("device", str, "auto, cpu, cuda, cuda:1, mps"),
    "--max-train-images": ("max_train_images", int, "use a random subset of the training set"),
    "--knn-every": ("knn_every", int, "steps between kNN monitor evaluations (0: off)"),
    "--knn-every-s": ("knn_every_s", float, "also every this many seconds, never more than 20 %% of the run's time (0: steps only)"),
    "--knn-samples": ("knn_samples", int, "test images of the kNN monitor (0: the full protocol, whole test vs whole train set)"),
    "--log-every": ("log_every", int, "steps between metric log lines"),
    "--checkpoint-every": ("checkpoint_every", float, "seconds between checkpoints"),
}
METHOD_FLAGS = {
    "--temperature": ("temperature", float, "InfoNCE / NT-Xent temperature"),
    "--proj-dim": ("proj_dim", int, "projection head output size"),
    "--queue-size": ("queue_size", int, "MoCo queue length K"),
    "--momentum": ("momentum", float, "MoCo key / BYOL target EMA momentum"),
    "--predictor-lr-scale": ("predictor_lr_scale", float, "BYOL: the predictor's learning rate as a multiple of the rest's"),
    "--bank-momentum": ("bank_momentum", float, "memory bank: weight of a row's old value when it is updated"),
    "--bank-loss": ("bank_loss", str, "memory bank loss: nce or infonce"),
    "--prototypes": ("n_prototypes", int, "SwAV prototypes"),
    "--tau-plus": ("debiased_tau_plus", float, "debiased contrastive loss class prior (0: off)"),
}


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _add_flags(parser: argparse.ArgumentParser, flags: dict) -> None:
    for flag, (dest, typ, help_text) in flags.items():
        parser.add_argument(flag, dest=dest, type=typ, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssl_viz", description="Train, embed and evaluate contrastive encoders.")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train an encoder into a run directory")
    _add_flags(tr, TRAIN_FLAGS)
    _add_flags(tr, METHOD_FLAGS)
    tr.add_argument("--amp", dest="amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast on CUDA")
    tr.add_argument("--compile", dest="compile", action="store_true", default=None, help="torch.compile the model")
    tr.add_argument("--channels-last", dest="channels_last", action="store_true", default=None)
    tr.add_argument("--config", type=Path, metavar="FILE",
                    help="a JSON TrainConfig, e.g. a run's config.json (every field; flags given too override it)")
    tr.add_argument("--out", type=Path, help="run directory (default runs/<method>-<encoder>-<dataset>-<time>)")
    tr.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR to its original budget")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")

    for name, text in (("embed", "write embeddings of a dataset to .npz"), ("evaluate", "kNN, linear probe, alignment, uniformity as JSON")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--checkpoint", required=True, help="run directory, or a checkpoint file with --encoder")
        p.add_argument("--encoder", help="architecture of a bare checkpoint file")
        p.add_argument("--dataset", required=True)
        p.add_argument("--label", help="factor used as label")
        p.add_argument("--representation", default="backbone", help="backbone, projector or stage:NAME")
        p.add_argument("--device", default="auto")
        p.add_argument("--allow-partial", action="store_true",
                       help="load a checkpoint file that lacks some of the encoder's tensors (they stay random)")
        if name == "embed":
            p.add_argument("--split", default=None, choices=["train", "test", "all"],
                           help="which images (default: all for folder:PATH, test for the built-in sets)")
            p.add_argument("--out", type=Path, required=True,
                           help=".npz of embeddings, labels and (folders) file names; skipped files go to OUT.skipped.tsv")
        p.add_argument("--image-size", type=image_size_arg, default=None, metavar="N",
                       help=f"{name} a folder:PATH at N x N px (default: the size the model was trained at, else 64)")
        if name == "evaluate":
            p.add_argument("--split", default="test", choices=["test", "all"],
                           help="images of alignment and uniformity: the test split, or all (train + test); "
                                "kNN and linear accuracy are always train -> test (held out)")
            p.add_argument("--max-train", type=int, default=None, help="use at most this many training images as the kNN bank")
            p.add_argument("--k", type=int, default=KNN_K)
            p.add_argument("--knn-temperature", type=float, default=KNN_TEMPERATURE)

    from ssl_viz.analysis.diagnosis.dose import DEFAULT_N_TEST, DEFAULT_N_TRAIN

    dg = sub.add_parser("diagnose", help="which augmentations suit this dataset's label? dose-response, verdicts and a recommended policy as JSON")
    dg.add_argument("--dataset", required=True, help="a labelled dataset (or one with factors, with --label)")
    dg.add_argument("--label", help="factor used as label, e.g. orientation, source, color, shape")
    dg.add_argument("--checkpoint", help="encoder to measure invariance and kNN/linear accuracy with (run directory or file)")
    dg.add_argument("--encoder", help="architecture of a bare checkpoint file; alone: an untrained encoder of it")
    dg.add_argument("--allow-partial", action="store_true",
                    help="load a checkpoint file that lacks some of the encoder's tensors (they stay random)")
    dg.add_argument("--representation", default="backbone", help="backbone, projector or stage:NAME")
    dg.add_argument("--augmentations", help="comma-separated subset of: " + ", ".join(_single_transforms()))
    dg.add_argument("--strengths", help="comma-separated doses in (0, 1] of the dose-response (default 0.2,0.4,0.6,0.8,1)")
    dg.add_argument("--strength", type=float, default=1.0, help="the dose of the single-strength verdicts (augmentations, CSV)")
    dg.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="training images of the probe and the kNN bank (a seeded random subset)")
    dg.add_argument("--n-test", type=int, default=DEFAULT_N_TEST, help="test images measured (a seeded random subset)")
    dg.add_argument("--seed", type=int, default=0)
    dg.add_argument("--device", default="cpu", help="device of the ablation and verification runs")
    dg.add_argument("--ablation", choices=["add", "remove"], help="also train short runs with each augmentation added to / removed from --augment")
    dg.add_argument("--ablation-budget", type=float, default=20.0, help="seconds per ablation run")
    dg.add_argument("--augment", default="simclr", help="base policy of the ablation runs")
    dg.add_argument("--verify", type=float, metavar="SECONDS",
                    help="train SimCLR for SECONDS with the recommended policy, with simclr and with simclr-small; report their kNN top-1")
    dg.add_argument("--batch-size", type=int, default=None, help="batch of the ablation and verification runs (default 256)")
    dg.add_argument("--out", type=Path, required=True, help="JSON report: the dose-response curves, the recommended policy, the verdicts at --strength")
    dg.add_argument("--csv", type=Path, help="also write the table as CSV")
    return parser


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig with the flags given on the command line (others keep ``base``'s values; without ``base``, those of
    the ``--method``'s preset, :func:`~ssl_viz.config.method_preset`)."""
    base = base or method_preset(args.method or TrainConfig().method)
    train_changes = {dest: getattr(args, dest) for dest, _, _ in TRAIN_FLAGS.values() if getattr(args, dest) is not None}
    for extra in ("amp", "compile", "channels_last"):
        if getattr(args, extra, None) is not None:
            train_changes[extra] = getattr(args, extra)
    method_changes = {dest: getattr(args, dest) for dest, _, _ in METHOD_FLAGS.values() if getattr(args, dest) is not None}
    return replace(base, **train_changes, method_cfg=replace(base.method_cfg or MethodConfig(), **method_changes))


def config_from_file(path: str | Path) -> TrainConfig:
    """The TrainConfig in JSON file ``path`` (e.g. a run's ``config.json``; unknown keys ignored, missing ones default).

    Raises :class:`CliError` when the file cannot be read, is not a JSON object, or a field has the wrong type.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read --config {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # not UTF-8, not JSON
        raise CliError(f"--config {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CliError(f"--config {path} must hold a JSON object (a TrainConfig), not a {type(data).__name__}")
    try:
        cfg = from_dict(TrainConfig, data)
        check_types(cfg)
    except (TypeError, ValueError) as exc:
        raise CliError(f"--config {path}: {exc}") from exc
    return cfg


def train_flags(cfg: TrainConfig, base: TrainConfig | None = None, always: tuple[str, ...] = ()) -> list[str]:
    """Flags of ``python -m ssl_viz train`` that rebuild ``cfg`` (the names, plus only the values that differ from
    ``base``; by default from the method's preset, what the CLI starts from for its ``--method``). The fields named in
    ``always`` (TrainConfig or MethodConfig field names) are spelled even when they equal ``base``'s.

    For showing a run as a command line; runs started in the background train from their ``config.json``
    instead (``train --config``). Raises :class:`CliError` when ``cfg`` changes a field that has no flag.
    """
    base = base or method_preset(cfg.method)
    mbase = base.method_cfg
    mcfg = cfg.method_cfg or mbase
    args = ["--method", cfg.method, "--encoder", cfg.encoder, "--dataset", cfg.dataset]
    covered, mcovered = {"method", "encoder", "dataset", "method_cfg"}, set()
    for table, obj, default, seen in ((TRAIN_FLAGS, cfg, base, covered), (METHOD_FLAGS, mcfg, mbase, mcovered)):
        for flag, (dest, _, _) in table.items():
            seen.add(dest)
            value = getattr(obj, dest)
            if dest not in ("method", "encoder", "dataset") and (value != getattr(default, dest) or dest in always) and value is not None:
                text = repr(value) if isinstance(value, float) else ":".join(map(repr, value)) if isinstance(value, tuple) else str(value)
                args += [flag, text]
    if cfg.amp != base.amp:
        args.append("--amp" if cfg.amp else "--no-amp")
    args += [f for f, on in (("--compile", cfg.compile), ("--channels-last", cfg.channels_last)) if on]
    covered |= {"amp", "compile", "channels_last"}
    lost = [f.name for f in fields(cfg) if f.name not in covered and getattr(cfg, f.name) != getattr(base, f.name)]
    lost += [f"method_cfg.{f.name}" for f in fields(mcfg) if f.name not in mcovered and getattr(mcfg, f.name) != getattr(mbase, f.name)]
    if lost:
        raise CliError(f"the train command has no flag for {', '.join(lost)}; keep their defaults")
    return args


def cmd_train(args: argparse.Namespace) -> int:
    from ssl_viz.train import load_config, train

    command = "python -m ssl_viz " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.resume:
        run_dir = args.resume
        cfg = load_config(run_dir)
        state = train(cfg, run_dir, resume=True, progress_bar=not args.quiet, command=command)
    else:
        cfg = config_from_args(args, config_from_file(args.config) if args.config else None)
        validate_config(cfg)
        if cfg.dataset.startswith("folder:") and not args.quiet:
            from ssl_viz.data import load_dataset

            load_dataset(cfg.dataset, "train", progress=progress_line(), image_size=cfg.image_size)  # the store's first build
        run_dir = args.out or Path("runs") / run_name(cfg)
        if (Path(run_dir) / CHECKPOINT).exists():
            raise CliError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
        state = train(cfg, run_dir, progress_bar=not args.quiet, command=command)
    print(strict_json({"run_dir": str(run_dir), "steps": state.step, "seconds": round(state.elapsed, 1), "stop": state.stop_reason}))
    return 0 if state.stop_reason in ("done", "cancelled") else 1


def _load(args: argparse.Namespace):
    """The model of ``--checkpoint``; for a checkpoint file, its load report goes to stderr (one line)."""
    from ssl_viz.checkpoint import load_model
    from ssl_viz.device import env_rank

    model = load_model(args.checkpoint, args.encoder, allow_partial=getattr(args, "allow_partial", False))
    if Path(args.checkpoint).is_file() and env_rank() == 0:  # under torchrun: once, not once per rank
        print(f"loaded {Path(args.checkpoint).name} as {args.encoder}: {model.report.summary()}", file=sys.stderr)
    return model


def trained_image_size(checkpoint: str | Path) -> int | None:
    """The ``image_size`` in the training config (``config.json``) of run directory ``checkpoint``, or None (a
    checkpoint file, a foreign model, or a run trained at its dataset's own size)."""
    from ssl_viz.fileio import read_json
    from ssl_viz.rundir import CONFIG

    data = read_json(Path(checkpoint) / CONFIG) if Path(checkpoint).is_dir() else None
    size = data.get("image_size") if isinstance(data, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 1024 else None


def folder_image_size(args: argparse.Namespace) -> int | None:
    """The size ``embed`` / ``evaluate`` read a ``folder:PATH`` at: ``--image-size``, else the one the model was trained
    at (:func:`trained_image_size`), else None (the folder's default); None for every other dataset."""
    if not args.dataset.startswith("folder:"):
        return args.image_size
    return args.image_size or trained_image_size(args.checkpoint)


def strict_json(obj) -> str:
    """``obj`` as strict JSON (RFC 8259): NaN and infinities become null, never the bare ``NaN`` Python writes."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(obj), allow_nan=False)


def _check_numbers(args: argparse.Namespace) -> None:
    """Numeric flags of ``embed`` / ``evaluate`` in range, else :class:`CliError` (one line, exit 2)."""
    if getattr(args, "k", 1) < 1:
        raise CliError(f"--k must be at least 1 (neighbours that vote), got {args.k}")
    temperature = getattr(args, "knn_temperature", 1.0)
    if not (math.isfinite(temperature) and temperature > 0):
        raise CliError(f"--knn-temperature must be a positive number, got {temperature}")
    if getattr(args, "max_train", None) is not None and args.max_train < 1:
        raise CliError(f"--max-train must be at least 1 (training images in the kNN bank), got {args.max_train}")


def progress_line(stream=None):
    """A ``progress(fraction, text)`` for image-store builds: one line redrawn on a terminal, silent otherwise."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return None

    def show(fraction: float, text: str) -> None:
        stream.write(f"\r\033[Kimage store: {text} ({fraction:.0%})")
        if fraction >= 1.0 and text.startswith("ordering"):
            stream.write("\n")
        stream.flush()

    return show


def _folder_report(dataset: str, split: str, out: Path | None = None, first: int = 5) -> None:
    """For a folder dataset with skipped files: their count and the first few on stderr, and with ``out`` the
    full list (``file<TAB>reason`` per line) in ``OUT.skipped.tsv``."""
    if not dataset.startswith("folder:"):
        return
    from ssl_viz.data.folder import report
    from ssl_viz.fileio import atomic_write_text

    rep = report(dataset[len("folder:"):], split)
    if rep is None or not rep.skipped:
        return
    shown = "; ".join(f"{name}: {why}" for name, why in rep.skipped[:first])
    more = f" (and {len(rep.skipped) - first} more)" if len(rep.skipped) > first else ""
    where = ""
    if out is not None:
        listing = Path(f"{out}.skipped.tsv")
        atomic_write_text(listing, "file\treason\n" + rep.skipped_text())
        where = f"; the full list is in {listing}"
    print(f"skipped {len(rep.skipped)} files: {shown}{more}{where}", file=sys.stderr)


# How long an ``embed`` rank may wait in a collective: the others wait while rank 0 builds a folder's image store
# (decoding every image once; a large folder takes a while), and rank 0 waits for the slowest slice.
EMBED_TIMEOUT_S = 6 * 3600


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed ``--dataset`` into one ``.npz`` (``embeddings``, ``labels``, ``split``, and ``names`` for folders).

    Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE > 1``) the rows are sharded: the numbers, the checkpoint
    and the representation are checked on every rank before the process group exists (gloo on the CPU, NCCL
    on CUDA, each rank on its ``LOCAL_RANK`` GPU); rank 0 loads the dataset first (a folder's image store is
    built once), then the others open it. Rank r embeds only its contiguous slice
    :func:`~ssl_viz.evaluate.shard_rows` ``(N, r, N_ranks)`` of the rows (of a folder's memory-mapped store it
    reads only those images), :func:`~ssl_viz.evaluate.gather_rows` joins the slices on rank 0 in rank order,
    and rank 0 alone checks the embeddings and writes the file atomically: the same keys, values and row order
    as one process writes. Other ranks write and print nothing. After each step the ranks agree
    (:func:`_on_ranks`): an error on any rank ends every rank with its one line and exit status 2, none is
    left waiting.
    """
    from datetime import timedelta

    import torch

    from ssl_viz.data import load_dataset
    from ssl_viz.device import Distributed, init_distributed, launched_distributed, pick_device, rank_device, shutdown_distributed
    from ssl_viz.evaluate import embed_dataset, gather_rows, shard_rows

    _check_numbers(args)
    model = _load(args)
    fn = model.embed_fn(args.representation)  # an unknown representation fails here, before any dataset is read
    args.split = args.split or ("all" if args.dataset.startswith("folder:") else "test")
    device = rank_device(pick_device(args.device))
    group = Distributed(False, 0, 1)
    if launched_distributed():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL's collectives run on this rank's GPU
        group = init_distributed("nccl" if device.type == "cuda" else "gloo", timedelta(seconds=EMBED_TIMEOUT_S))

    image_size = folder_image_size(args)

    def load(progress):
        return load_dataset(args.dataset, args.split, label=args.label, progress=progress, image_size=image_size)

    def embed_slice(images):
        model.encoder.to(device)
        if model.projector is not None:
            model.projector.to(device)
        with torch.inference_mode():
            return embed_dataset(fn, images, device=device)

    try:
        ds = _on_ranks(group, lambda: load(progress_line()), run=group.rank == 0)  # rank 0 first: one store build
        if group.enabled:
            rest = _on_ranks(group, lambda: load(None), run=group.rank != 0)
            ds = ds if group.rank == 0 else rest
            _same_everywhere(group, len(ds), f"the number of images of {args.dataset} [{args.split}]")
        rows = shard_rows(len(ds), group.rank, group.world)
        emb = _on_ranks(group, lambda: embed_slice(ds.images[rows]))  # a view: this rank reads only its rows
        if group.enabled:
            emb = gather_rows(emb)  # rank 0: every row, in order; None on the others
        _on_ranks(group, lambda: _write_embeddings(args, model, ds, emb), run=group.rank == 0)
    finally:
        if group.enabled:
            shutdown_distributed()
    return 0


def _write_embeddings(args: argparse.Namespace, model, ds, emb) -> None:
    """Check ``emb`` (every row of ``ds``), write ``args.out`` atomically, report skipped files, print the JSON line."""
    from ssl_viz.evaluate import check_embeddings
    from ssl_viz.fileio import atomic_write

    check_embeddings(emb, f"{model.name}'s {args.representation} embeddings of {args.dataset} [{args.split}]")  # before any file

    arrays = {"embeddings": emb.numpy(), "labels": ds.labels.numpy(), "split": np.asarray(args.split)}
    if ds.names is not None:
        arrays["names"] = np.asarray(ds.names, dtype=str)  # the file of each row, relative to the folder

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(args.out, write)  # never a half-written file
    _folder_report(args.dataset, args.split, args.out)
    print(strict_json({"out": str(args.out), "split": args.split, "embeddings": list(emb.shape)}))


def _on_ranks(group, step, run: bool = True):
    """``step()``'s result on this rank (None where ``run`` is false), once every rank of ``group`` has done its part.

    Alone (no process group) this is just ``step()``. Under ``torchrun`` it is a collective every rank calls:
    the ranks exchange how their part ended (``all_gather_object``), and when any failed, every rank raises:
    the failing rank its own error, the others a :class:`CliError` with its one line (a user error's message as
    :func:`main` prints it, or ``rank R failed: ...`` for anything else), so that no rank is left waiting.
    """
    if not group.enabled:
        return step() if run else None
    import torch.distributed as dist

    result, error = None, None
    if run:
        try:
            result = step()
        except Exception as exc:  # noqa: BLE001 - told to the other ranks, then re-raised below
            error = exc
    message = None if error is None else (user_error(error) or f"rank {group.rank} failed: {type(error).__name__}: {error}")
    messages = [None] * group.world
    dist.all_gather_object(messages, message)
    if error is not None:
        raise error
    first = next((m for m in messages if m is not None), None)
    if first is not None:
        raise CliError(first)
    return result


def _same_everywhere(group, value, what: str) -> None:
    """Raise :class:`CliError` on every rank unless every rank of ``group`` has the same ``value`` (a collective)."""
    import torch.distributed as dist

    values = [None] * group.world
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise CliError(f"the ranks disagree on {what} ({', '.join(map(str, values))}): did the dataset change "
                       "while they loaded it? Run again")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ssl_viz.data import load_dataset
    from ssl_viz.evaluate import evaluate_model

    _check_numbers(args)
    model = _load(args)
    image_size = folder_image_size(args)
    train_ds = load_dataset(args.dataset, "train", label=args.label, progress=progress_line(), image_size=image_size)
    test_ds = load_dataset(args.dataset, "test", label=args.label, image_size=image_size)
    _folder_report(args.dataset, "test")
    if args.max_train is not None:
        train_ds = train_ds.head(args.max_train)
    result = evaluate_model(model, train_ds, test_ds, representation=args.representation, k=args.k, temperature=args.knn_temperature,
                            device=args.device, geometry=args.split)
    print(strict_json(result))
    return 0


def _single_transforms() -> list[str]:
    from ssl_viz.augment import SINGLE_TRANSFORMS

    return SINGLE_TRANSFORMS


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CliError(f"{flag} takes comma-separated numbers, got {text!r}") from None


def cmd_diagnose(args: argparse.Namespace) -> int:
    import torch

    from ssl_viz.analysis.diagnosis import STRENGTHS, attach_ablation, dose_response, jsonable
    from ssl_viz.data import load_dataset
    from ssl_viz.fileio import atomic_write_text
    from ssl_viz.sweeps import run_ablation, run_verification, sweep_config

    names = [n.strip() for n in args.augmentations.split(",") if n.strip()] if args.augmentations else _single_transforms()
    unknown = [n for n in names if n not in _single_transforms()]
    if unknown:
        raise CliError(f"unknown augmentation {unknown[0]!r}; choose from: {', '.join(_single_transforms())}")
    strengths = _floats(args.strengths, "--strengths") if args.strengths else list(STRENGTHS)
    for flag, values in (("--strength", [args.strength]), ("--strengths", strengths)):
        if not values or not all(0.0 < v <= 1.0 for v in values):
            raise CliError(f"{flag} must be in (0, 1], got {', '.join(f'{v:g}' for v in values) or 'nothing'}")
    for flag, value in (("--n-train", args.n_train), ("--n-test", args.n_test), ("--batch-size", args.batch_size or 2)):
        if value < 1 or (flag == "--batch-size" and value < 2):
            raise CliError(f"{flag} must be at least {2 if flag == '--batch-size' else 1}, got {value}")
    for flag, value in (("--verify", args.verify), ("--ablation-budget", args.ablation_budget)):
        if value is not None and not value > 0:
            raise CliError(f"{flag} must be a positive number of seconds, got {value:g}")
    full_train = load_dataset(args.dataset, "train", label=args.label)
    full_test = load_dataset(args.dataset, "test", label=args.label)
    if not (full_train.has_labels and full_test.has_labels):
        raise CliError(f"{args.dataset} has no labels; pick a labelled dataset or a factor with --label")
    train_ds, test_ds = full_train.head(args.n_train, seed=args.seed), full_test.head(args.n_test, seed=args.seed)
    embed_fn, encoder_name = None, None
    if args.checkpoint:
        model = _load(args)
        embed_fn, encoder_name = model.embed_fn(args.representation), model.name
    elif args.encoder:
        from ssl_viz.encoders import build_encoder

        embed_fn, encoder_name = build_encoder(args.encoder, in_channels=train_ds.channels).eval(), f"untrained {args.encoder}"
    try:
        with torch.no_grad():
            resp = dose_response(train_ds, test_ds, embed_fn, names, sorted(set(strengths) | {args.strength}), seed=args.seed,
                                 encoder_name=encoder_name)
    except ValueError as exc:  # too small a sample for the probe
        raise CliError(str(exc)) from exc
    diag = resp.at(args.strength)
    base = sweep_config(args.dataset, args.label, args.augment, device=args.device, seed=args.seed)
    if args.batch_size:
        base = replace(base, batch_size=args.batch_size)
    if args.ablation:
        try:
            accs = run_ablation(base, names, train_ds, test_ds, mode=args.ablation, budget=args.ablation_budget)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        attach_ablation(diag, accs, args.ablation)
    for c in resp.curves:
        print(c.summary)
    print(f"recommended policy: {resp.recommended_policy}")
    if args.verify:
        resp.verification = run_verification(base, resp.recommended_policy, full_train, full_test, args.verify)
        print(f"kNN top-1 after {args.verify:g} s of SimCLR ({args.dataset}, {full_train.label_factor or 'label'}): "
              + ", ".join(f"{k} {v:.3f}" for k, v in resp.verification.items()))
    report = {**diag.to_dict(), **resp.to_dict(), "seconds": round(resp.seconds, 1)}
    atomic_write_text(args.out, json.dumps(report, indent=2, allow_nan=False))
    if args.csv:
        atomic_write_text(args.csv, diag.to_csv())
    print(strict_json(jsonable({"out": str(args.out), "seconds": round(resp.seconds, 1), "verdicts": diag.verdicts,
                                "recommended_policy": resp.recommended_policy, "verification": resp.verification})))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": cmd_train, "embed": cmd_embed, "evaluate": cmd_evaluate, "diagnose": cmd_diagnose}
    try:
        return handlers[args.command](args)
    except Exception as exc:
        message = user_error(exc)
        if message is None:  # a bug: the traceback
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def user_error(exc: BaseException) -> str | None:
    """The line :func:`main` prints after ``error: `` for a user error (then exit status 2), or None for a bug."""
    from ssl_viz.checkpoint import CheckpointError
    from ssl_viz.data import DatasetError
    from ssl_viz.encoders import EncoderError
    from ssl_viz.evaluate import EmbeddingError

    if isinstance(exc, (CliError, ConfigError, RunDirError, CheckpointError, DatasetError, EncoderError, EmbeddingError)):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, OSError):  # e.g. disk full while writing a checkpoint: the previous one is intact
        return str(exc)
    if isinstance(exc, Exception):  # the training loop's own errors
        from ssl_viz.train import TrainingError

        if isinstance(exc, TrainingError):
            return str(exc)
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
