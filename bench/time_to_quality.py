"""Time to quality on the CPU: weighted kNN top-1 on Fashion-MNIST against training seconds, per method.

    python -m bench.time_to_quality [--retrain] [--models models] [--target 0.85]

The curves are those of the zoo runs (``python -m ssl_viz.zoo``, i.e. ``make models``):
each trains from scratch for 300 s with the default recipe, its kNN monitor on the
full protocol (k=200, T=0.1, all 10k test images against all 60k training images;
monitoring time is not counted in the budget). ``--retrain`` rebuilds them first
(about 7 minutes a method on 2 cores); without it the shipped runs are read.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssl_viz.paths import models_dir  # noqa: E402
from ssl_viz.rundir import CARD, read_card, read_metrics  # noqa: E402
from ssl_viz.zoo import CPU_ENTRIES  # noqa: E402


def read_curve(run_dir: Path) -> dict:
    """The run's full-protocol kNN points ``[(seconds, knn)]`` and its card's summary."""
    card = read_card(run_dir) or {}
    points = [(float(rec["time"]), float(rec["knn_top1"])) for rec in read_metrics(run_dir)
              if "knn_top1" in rec and rec.get("knn_n_test", 0) >= 10_000]
    ev = card.get("evaluation", {})
    return {"name": run_dir.name, "method": card.get("method"), "encoder": card.get("encoder"), "device": card.get("device"),
            "seconds": card.get("seconds"), "steps": card.get("steps"), "images_seen": card.get("images_seen"),
            "knn": ev.get("knn_top1"), "linear": ev.get("linear_top1"), "alignment": ev.get("alignment"),
            "uniformity": ev.get("uniformity"), "curve": points, "command": card.get("command", ""),
            "saved": time.strftime("%Y-%m-%d", time.gmtime(card["saved_at"])) if "saved_at" in card else ""}


COMMON_FLAGS = {"--dataset", "--method", "--encoder", "--width", "--augment", "--time-budget", "--device", "--knn-every",
                "--knn-samples", "--out"}


def recipe_text(command: str) -> str:
    """The training flags of a card's command that say its recipe (batch, lr, the method's own settings)."""
    words = shlex.split(command)[3:]  # after "python -m ssl_viz train"
    out, i = [], 0
    while i < len(words):
        flag = words[i]
        value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else None
        if flag.startswith("--") and flag not in COMMON_FLAGS and flag != "--quiet":
            out.append(flag if value is None else f"{flag} {value}")
        i += 1 if value is None else 2
    return " ".join(out)


def first_reaching(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, acc in curve if acc >= target), None)


def collect(models: Path) -> list[dict]:
    return [read_curve(models / name) for name in CPU_ENTRIES if (models / name / CARD).exists()]


def retrain(models: Path) -> None:
    """Rebuild the CPU zoo runs (about 7 minutes each on 2 cores)."""
    from ssl_viz import zoo

    zoo.main(["--only", ",".join(CPU_ENTRIES), "--out", str(models)])


def markdown(rows: list[dict], target: float) -> str:
    lines = ["| run | recipe | trained | device | s | steps | images | kNN curve (s: top-1) | final kNN | linear | align. | unif. | "
             f"first >= {target} |", "| --- | --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        curve = ", ".join(f"{t:.0f}: {a:.3f}" for t, a in r["curve"])
        hit = first_reaching(r["curve"], target)
        reached = f"{hit:.0f} s" if hit is not None else "not reached"
        lines.append(f"| {r['name']} | `{recipe_text(r.get('command', ''))}` | {r.get('saved', '')} | {r['device']} | {r['seconds']} | {r['steps']} | {r['images_seen']:,} | {curve} | "
                     f"{r['knn']:.4f} | {r['linear']:.4f} | {r['alignment']:.3f} | {r['uniformity']:.3f} | "
                     f"{reached} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=models_dir())
    parser.add_argument("--retrain", action="store_true", help="rebuild the CPU zoo runs first (python -m ssl_viz.zoo)")
    parser.add_argument("--target", type=float, default=0.85)
    args = parser.parse_args()
    if args.retrain:
        retrain(args.models)
    print(markdown(collect(args.models), args.target))


if __name__ == "__main__":
    main()
