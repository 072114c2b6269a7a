"""Run every CPU benchmark and write ``bench/RESULTS.md`` (``make bench``).

    python -m bench.report [--skip browser,projection] [--retrain] [--out bench/RESULTS.md]

Sections: the machine; time to quality (the zoo's 300 s runs, ``--retrain`` rebuilds
them: about 45 minutes); training throughput against a plain loop and per-image PIL
augmentation; embedding extraction; projections; retrieval; page render times in a
real browser; and the GPU figures recorded by ``bench.gpu`` in ``bench/results/gpu-*.json``
(a GPU is not needed to write the report; run ``python -m bench.gpu --json
bench/results/gpu-<card>.json`` on one to add or refresh them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import augment_throughput, extraction, retrieval, time_to_quality, train_throughput  # noqa: E402
from ssl_viz.paths import models_dir  # noqa: E402
from ssl_viz.zoo import CPU_RECIPE  # noqa: E402

SECTIONS = ("time", "recipes", "limits", "throughput", "extraction", "projection", "retrieval", "browser", "gpu")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def section_machine(only: set[str] | None = None) -> str:
    import numpy
    import streamlit
    import torchvision

    return (f"Written {time.strftime('%Y-%m-%d %H:%M')} by `python -m bench.report` on {cpu_name()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), torchvision {torchvision.__version__}, "
            f"numpy {numpy.__version__}, streamlit {streamlit.__version__}, Python {platform.python_version()}. "
            "Figures, not assertions: a busy machine gives lower ones."
            + (f" This write reran {', '.join(sorted(only))} only; the other sections are kept from earlier reports, possibly "
               "from another machine." if only else ""))


def section_time(retrain: bool) -> str:
    if retrain:
        time_to_quality.retrain(models_dir())
    rows = time_to_quality.collect(models_dir())
    recipe = " ".join(CPU_RECIPE)
    return ("Fashion-MNIST, training from scratch on the CPU for 300 s (`python -m ssl_viz.zoo`, the default recipe `" + recipe
            + "` with each method's preset (`ssl_viz.config.METHOD_PRESETS`) on top: the recipe column), "
            "weighted kNN top-1 (k=200, T=0.1) of the backbone features on the full 10k test set with the 60k training set as the bank; "
            "the curve is the kNN monitor's, seconds of training (monitoring excluded). Target: 0.85.\n\n"
            + time_to_quality.markdown(rows, 0.85))


GRID_TEXT = {  # what each recorded grid searched (bench/recipe_search.py)
    "cpu120": "SimCLR, small-cnn width 16, lr 8e-3: the intensity-augmentation study behind `simclr-small`",
    "final300": "SimCLR, small-cnn width 16, lr 8e-3: the two finalists",
    "speed120": "SimCLR from the `simclr-small` default: smaller training views (test images stay 28 px), multi-crop, "
                "temperature, batch size, learning rate",
    "methods120": "each method from speed120's best (batch 128, lr 6e-3), then the usual levers of its paper",
    "methods120b": "the second screen: each method's best of methods120 pushed one step further, and SimCLR at batch 64",
    "methods120c": "the third screen, for the presets still short of 0.85 at 300 s (BYOL, MoCo)",
    "confirm300": "SimCLR, `simclr-small`: speed120's best (batch 128, lr 6e-3) against the default (batch 256, lr 8e-3), back to back",
}


def section_recipes() -> str:
    """The recorded recipe searches (bench/results/recipe-search-*.jsonl), best first."""
    import re

    parts = []
    for f in sorted((ROOT / "bench" / "results").glob("recipe-search-*.jsonl")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        rows.sort(key=lambda r: -r.get("knn_top1", 0))
        grid = f.stem.removeprefix("recipe-search-")
        if grid == "presets300":
            head = ("The presets at 300 s: the zoo's runs (`python -m ssl_viz.zoo`, kNN monitor on the full protocol, its time "
                    "excluded from the budget), each against the old recipe's zoo run:")
        elif "emulated" in grid:
            head = ("Emulated 300 s CPU runs on a GPU (`python -m bench.recipe_search --grid cpu300 --device cuda`): each candidate "
                    "trains for the steps 2 CPU cores manage in 300 s; only the first candidates finished in the GPU time at hand:")
        else:
            budget = re.search(r"(\d+)[a-z]?$", grid).group(1)
            head = (f"Real CPU runs (`python -m bench.recipe_search --grid {grid} --real --budget {budget}`), "
                    f"{GRID_TEXT.get(grid, 'SimCLR')}; full-protocol kNN:")
        real = "emulated" not in grid
        table_rows = [[r["name"], r.get("budget_s", r.get("planned_steps", "")) if not real else (round(r["seconds"]) if "seconds" in r else "not recorded"),
                       r.get("steps", ""), f"{r.get('knn_top1', float('nan')):.4f}", r.get("note", r.get("error", ""))] for r in rows]
        parts.append(f"`{f.relative_to(ROOT)}`. " + head + "\n\n"
                     + table(["candidate", "training s" if real else "planned steps", "steps", "kNN top-1", "note"], table_rows))
    return "\n\n".join(parts) if parts else "No recipe search recorded."


def section_limits() -> str:
    """The step split recorded by ``python -m bench.step_split --json bench/results/step-split-cpu.json`` (timed: run it idle)."""
    f = ROOT / "bench" / "results" / "step-split-cpu.json"
    if not f.exists():
        return "Not recorded: run `python -m bench.step_split --json bench/results/step-split-cpu.json` with the machine idle."
    r = json.loads(f.read_text())
    c, ms = r["config"], r["ms_per_step"]
    parts = [p for p in ms if p != "step"]
    head = (f"`{f.relative_to(ROOT)}` (`python -m bench.step_split`): {c['method']}, {c['encoder']} width {c['width']}, "
            f"batch {c['batch']}, {r.get('threads', 2)} threads: **{ms['step']:.0f} ms a step, {c['batch'] * 1000 / ms['step']:,.0f} "
            "images/s**, each part timed on its own over the same batches:")
    by_size = table(["operator input H x W", "share of forward + backward"],
                    [[k, f"{v:.0%}"] for k, v in r["share_by_input_size"].items() if v >= 0.005])
    compute = (ms["forward"] + ms["backward"]) / ms["step"]
    head += ("\n\nThe encoder's forward and backward are " + f"{compute:.0%}" + " of the step; batching, augmentation, clipping and "
             "the optimiser together are the rest. What is left to win is fewer FLOPs per image or more cores: the cheaper "
             "views of the recipe search (20-24 px training views, multi-crop's small crops) lost more accuracy than their "
             "extra steps gave back, and halving the batch again (64) doubled the steps for no gain at 300 s.")
    return (head + "\n\n" + table(["part", "ms / step", "share"], [[p, f"{ms[p]:.1f}", f"{ms[p] / ms['step']:.0%}"] for p in parts])
            + "\n\nForward and backward by the spatial size each operator works on (`torch.profiler` self time):\n\n" + by_size)


def section_throughput() -> str:
    encoder, width = CPU_RECIPE[CPU_RECIPE.index("--encoder") + 1], int(CPU_RECIPE[CPU_RECIPE.index("--width") + 1])
    parts = []
    for enc, w in ((encoder, width), ("resnet18-cifar", 16)):
        r = train_throughput.measure(enc, w, 256, torch.device("cpu"), min_time=10.0, workers=2)
        parts.append(f"SimCLR step, {enc} width {w}, batch 256, 28 px:\n\n"
                     + table(["loop", "images/s", "Trainer / this"], [[k, f"{v:,.0f}", f"{r['trainer'] / v:.2f}"] for k, v in r.items()]))
    aug = augment_throughput.measure(512, (28, 32), ("simclr",), "cpu", 2.0)
    parts.append("Augmentation alone (one view of 512 RGB images): batched `BatchAugment` vs torchvision v2 one image at a time:\n\n"
                 + table(["policy", "size", "batched img/s", "per-image img/s", "speed-up"],
                         [[r["policy"], r["size"], f"{r['batched']:,.0f}", f"{r['per_image']:,.0f}", f"{r['speedup']:.1f}x"] for r in aug]))
    return "\n\n".join(parts)


def section_extraction() -> str:
    r = extraction.measure(models_dir() / "simclr-fashion-mnist", 10_000, 256, 3)
    return (f"{r['model']} on {r['n']:,} test images, batch {r['batch']}:\n\n"
            + table(["path", "images/s"], [["app (`embed_dataset`)", f"{r['app_images_per_s']:,.0f}"],
                                           ["bare `model(x)` under `inference_mode`", f"{r['bare_images_per_s']:,.0f}"]])
            + f"\n\nRatio app / bare: **{r['ratio']:.2f}** (target >= 0.9).")


def section_projection() -> str:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "bench.projection", "--methods", "umap,pca"], cwd=ROOT, capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    fmt = lambda v, spec=".1f": "" if v is None else format(v, spec)  # noqa: E731
    return ("Fashion-MNIST embeddings of the shipped SimCLR (backbone), 2-D maps; each first map in a new process; "
            "repeat: another 10,000 points in that process; 70k: all of train + test in that process:\n\n"
            + table(["version", "method", "first 10k, empty numba cache (s)", "first 10k, cache filled by `make run` (s)", "server preload (s)",
                     "first 10k after the preload (s)", "repeat 10k (s)", "70k (s)", "trustworthiness", "15-NN recall"],
                    [[r["version"], r["method"], fmt(r["cold_empty_cache_s"]), fmt(r["cold_cache_filled_s"]), fmt(r.get("preload_s")),
                      fmt(r.get("after_preload_s")), fmt(r["repeat_s"]), fmt(r["70k_s"]), fmt(r["trustworthiness"], ".3f"),
                      fmt(r["knn_recall"], ".3f")] for r in rows]))


def section_retrieval() -> str:
    rows = [retrieval.measure(n, 128, 5) for n in (10_000, 100_000, 1_000_000)]
    text = table(["gallery", "bank MB", "build (s)", "one query (ms)", "per query in a batch of 100 (ms)"],
                 [[f"{r['n']:,}", f"{r['bank_mb']:.0f}", f"{r['build_s']:.2f}", f"{r['one_query_ms']:.1f}", f"{r['per_query_in_batch_ms']:.2f}"]
                  for r in rows])
    slow = [r["n"] for r in rows if r["one_query_ms"] > retrieval.INTERACTIVE_MS]
    verdict = (f"One exact query passes {retrieval.INTERACTIVE_MS:.0f} ms from {min(slow):,} items: an approximate index (IVF/HNSW) would take over there."
               if slow else f"Exact search stays under {retrieval.INTERACTIVE_MS:.0f} ms per query up to 1M items on this CPU; "
               "an approximate index (IVF/HNSW) would pay off beyond that or for many concurrent users.")
    return "Exact cosine top-10 over random unit 128-d embeddings:\n\n" + text + "\n\n" + verdict


def section_browser() -> str:
    from bench import browser_render

    rows = browser_render.measure(2)
    return ("Seconds from navigation until the page's script is idle, headless chromium, the default workspace; "
            "cold = first visit on a fresh server, warm = second visit:\n\n"
            + table(["page", "cold (s)", "warm (s)"], [[t, f"{v[0]:.1f}", f"{v[1]:.1f}"] for t, v in rows.items()]))


def section_gpu() -> str:
    files = sorted((ROOT / "bench" / "results").glob("gpu-*.json"))
    if not files:
        return "No GPU figures recorded yet: run `python -m bench.gpu --json bench/results/gpu-<card>.json` on a GPU machine."
    parts = []
    for f in files:
        r = json.loads(f.read_text())
        parts.append(f"**{r['card']}** (torch {r['torch']}, CUDA {r['cuda']}), SimCLR, ResNet-18 CIFAR stem width {r['width']}, "
                     f"batch {r['batch']}, 32 px, from `{f.relative_to(ROOT)}`:\n\n"
                     + table(["variant", "images/s", "peak GPU memory (GiB)"],
                             [[t["variant"], f"{t['images_per_s']:,.0f}", f"{t['peak_gib']:.2f}"] for t in r["training"]])
                     + f"\n\nAugmentation (two SimCLR views, batch {r['batch']}): batched on the GPU "
                       f"{r['augmentation']['batched_gpu_images_per_s']:,.0f} img/s; per-image v2 on one CPU core "
                       f"{r['augmentation']['per_image_cpu_images_per_s']:,.0f} img/s.\n\nExtraction: `embed_dataset` "
                       f"{r['extraction']['embed_dataset_images_per_s']:,.0f} img/s vs bare `model(x)` "
                       f"{r['extraction']['bare_images_per_s']:,.0f} img/s (ratio {r['extraction']['ratio']:.2f}).")
    return "\n\n".join(parts)


def previous_sections(path: Path) -> dict[str, str]:
    """The ``## title`` sections of an existing report, title -> body."""
    if not path.exists():
        return {}
    sections, title, body = {}, None, []
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            if title:
                sections[title] = "\n".join(body).strip()
            title, body = line[3:].strip(), []
        elif title:
            body.append(line)
    if title:
        sections[title] = "\n".join(body).strip()
    return sections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", default="", help=f"comma-separated sections to leave out: {', '.join(SECTIONS)}")
    parser.add_argument("--retrain", action="store_true", help="rebuild the CPU zoo runs for the time-to-quality curves (~45 min)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--only", default="", help="comma-separated sections to rerun; the others are kept from the existing --out")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    if only:
        skip = set(SECTIONS) - only
    titles = {"time": "Time to quality (CPU)", "recipes": "Recipe search (how the default recipe was chosen)",
              "limits": "What limits time to quality (CPU step split)",
              "throughput": "Training throughput (CPU)", "extraction": "Embedding extraction (CPU)",
              "projection": "Projections (CPU)", "retrieval": "Retrieval (CPU)", "browser": "Page render times (browser)", "gpu": "GPU"}
    previous = previous_sections(args.out)  # read before the partial writes below replace the file
    kept = previous if only else {}
    doc = ["# ssl-viz benchmark results", "", section_machine(only)]
    for key in SECTIONS:
        if key in skip:
            if titles[key] in kept:
                doc += ["", f"## {titles[key]}", "", kept[titles[key]]]
            continue
        print(f"running {key} ...", flush=True)
        body = section_time(args.retrain) if key == "time" else globals()[f"section_{key}"]()
        doc += ["", f"## {titles[key]}", "", body]
        args.out.write_text("\n".join(doc) + "\n")  # partial results survive an interrupted run
    for title, body in previous.items():  # sections written by the long, separate benchmarks (classroom, memory) stay
        if title not in titles.values():
            doc += ["", f"## {title}", "", body]
    args.out.write_text("\n".join(doc) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
