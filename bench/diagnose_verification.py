"""Diagnosis verified by training: the recommended policy against ``simclr`` and ``simclr-small``, per case.

    python -m bench.diagnose_verification [--budget 120] [--cases textures:orientation,...] [--all]

Each case is what ``python -m ssl_viz diagnose --dataset D --label F --verify 120 --out F.json`` does: the
dose-response diagnosis with its CLI defaults, then 120 s SimCLR runs (small-cnn width 16, the default batch) scored by
weighted kNN top-1 of the case's label (whole test set against the whole training set). The reports live in
``bench/results/diagnose-verification/<case>.json``. By default a case whose recommended policy is the one its
stored report already verified is left as it is, and a case whose recommendation changed retrains only the
recommended run (the two defaults do not depend on the diagnosis; their stored figures are kept and the report's
``verification_sources`` says which run each figure came from). ``--all`` retrains all three. Run it on an
otherwise idle machine: each 120 s run's figure depends on how many steps it gets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssl_viz.data import load_dataset  # noqa: E402
from ssl_viz.fileio import atomic_write_text  # noqa: E402
from ssl_viz.sweeps import VERIFY_POLICIES, run_verification, sweep_config  # noqa: E402

OUT = ROOT / "bench" / "results" / "diagnose-verification"
CASES = ("textures:orientation", "textures:source", "shapes:shape", "shapes:color", "shapes:orientation", "shapes:size",
         "shapes:position", "shapes:brightness", "digits:", "fashion-mnist:")


def case_file(case: str) -> Path:
    dataset, label = case.split(":")
    return OUT / (f"{dataset}-{label}.json" if label else f"{dataset}.json")


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def diagnose(dataset: str, label: str) -> dict:
    """The CLI's diagnosis with its defaults and no verification, as its JSON report."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "ssl_viz", "diagnose", "--dataset", dataset, "--out", str(out)]
        cmd += ["--label", label] if label else []
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
        return json.loads(out.read_text())


def run_case(case: str, budget: float, retrain_all: bool) -> dict:
    dataset, label = case.split(":")
    path = case_file(case)
    old = json.loads(path.read_text()) if path.exists() else {}
    start = time.perf_counter()
    new = diagnose(dataset, label)
    old_ver, old_src = old.get("verification") or {}, old.get("verification_sources") or {}
    same = old.get("recommended_policy") == new["recommended_policy"]
    if same and not retrain_all and set(old_ver) == set(VERIFY_POLICIES):
        print(f"{case}: recommendation unchanged ({new['recommended_policy']}); stored figures kept", flush=True)
        return old
    todo = VERIFY_POLICIES if retrain_all or not old_ver else ("recommended",)
    train = load_dataset(dataset, "train", label=label or None)
    test = load_dataset(dataset, "test", label=label or None)
    accs = run_verification(sweep_config(dataset, label or None, "simclr"), new["recommended_policy"], train, test, budget,
                            policies=todo)
    commit = git_commit()
    ver = {k: (accs[k] if k in accs else old_ver[k]) for k in VERIFY_POLICIES}
    sources = {k: (commit if k in accs else old_src.get(k, "earlier run")) for k in VERIFY_POLICIES}
    new.update(verification=ver, verification_sources=sources, verification_budget=budget)
    atomic_write_text(path, json.dumps(new, indent=2, allow_nan=False))
    print(f"{case}: {new['recommended_policy']} -> " + ", ".join(f"{k} {v:.3f}" for k, v in ver.items())
          + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    return new


def markdown_row(case: str, rep: dict) -> str:
    dataset, label = case.split(":")
    v = rep["verification"]
    best = max(v["simclr"], v["simclr-small"])
    delta = 100 * (v["recommended"] - best)
    above = 100 * (v["recommended"] - v["simclr"])
    return (f"| {dataset} | {label or 'label'} | `{rep['recommended_policy']}` | {v['recommended']:.3f} | {v['simclr']:.3f} | "
            f"{v['simclr-small']:.3f} | {delta:+.1f} | {'yes' if delta >= -1.0 else 'no'} | {above:+.1f} | {rep['seconds']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--all", action="store_true", help="retrain the two defaults too")
    args = parser.parse_args()
    cases = [c if ":" in c else c + ":" for c in args.cases.split(",") if c]
    reports = {c: run_case(c, args.budget, args.all) for c in cases}
    print("| dataset | label | recommended policy | recommended | `simclr` | `simclr-small` | Δ vs better default | "
          "within 1 point | Δ vs `simclr` | diagnosis s |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for c, rep in reports.items():
        print(markdown_row(c, rep))


if __name__ == "__main__":
    main()
