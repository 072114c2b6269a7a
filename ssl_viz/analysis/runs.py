"""Training runs as data: the run table, learning curves, the alignment-uniformity plane, embedding evolution.

* :func:`run_table` - one row per run (method, encoder, dataset, status, steps, kNN, linear,
  alignment, uniformity, wall time, device) from :class:`ssl_viz.jobs.RunStatus` and the run files.
* :func:`curve_frame` / :func:`curves_figure` / :func:`live_figure` - ``metrics.jsonl`` as a
  DataFrame and plotly figures (records a resumed run logged twice are dropped, see :func:`clean_metrics`).
* :func:`plane_points` / :func:`plane_figure` - Wang & Isola 2020 ("Understanding Contrastive
  Representation Learning through Alignment and Uniformity on the Hypersphere", fig. 2):
  each kNN-monitor record is a point (uniformity, alignment), lower-left is better.
* :func:`load_evolution` - the unit embeddings of a fixed test sample that the trainer's
  :class:`~ssl_viz.train.callbacks.EvolutionRecorder` stores every kNN-monitor step in ``RUN_DIR/evolution.npz``
  (the checkpoint itself is overwritten); :func:`evolution_frames` projects the snapshots to 2-D in one
  frame of reference using orthogonal Procrustes (Schönemann 1966) and :func:`evolution_figure` animates them.
* :func:`live_tiles`, :data:`TABLE_COLUMNS`, :data:`COMPARE_COLUMNS` - what the Train and Runs pages show.

Nothing here imports streamlit, trains or launches; figures are returned, never shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ssl_viz.rundir import EVOLUTION, read_card, read_config_dict, read_evolution, read_metrics

if TYPE_CHECKING:
    import pandas as pd

CURVE_METRICS = ("loss", "lr", "images_per_s", "knn_top1", "alignment", "uniformity")
TABLE_COLUMNS = ["run", "method", "encoder", "dataset", "status", "steps", "kNN", "linear", "alignment", "uniformity", "wall time (s)", "device"]
COMPARE_COLUMNS = [*TABLE_COLUMNS[:5], "kNN", "linear", "alignment", "uniformity", "augment", "batch", "τ", "seed"]
SCORE_COLUMNS = ("kNN", "linear", "alignment", "uniformity")   # shown with 3 decimals
LIVE_TILES = (("loss", "loss", "{:.4f}"), ("learning rate", "lr", "{:.2e}"), ("kNN top-1", "knn_top1", "{:.1%}"),
              ("images / s", "images_per_s", "{:.0f}"))
_MONITOR_KEYS = ("knn_top1", "alignment", "uniformity")


# ---------------------------------------------------------------------------- metrics


def clean_metrics(records: list[dict]) -> list[dict]:
    """Records of ``metrics.jsonl`` as one history: after a crash + resume the steps the resumed
    run repeats replace the crashed attempt's ones (a step going backwards drops later records)."""
    out: list[dict] = []
    for rec in records:
        step = rec.get("step")
        if not isinstance(step, (int, float)):
            continue
        if out and step < out[-1]["step"]:
            out = [r for r in out if r["step"] < step]
        out.append(rec)
    last: dict[tuple, dict] = {}
    for rec in out:
        last[(rec["step"], any(k in rec for k in _MONITOR_KEYS))] = rec
    return sorted(last.values(), key=lambda r: (r["step"], any(k in r for k in _MONITOR_KEYS)))


def read_records(run_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl`` as one history (:func:`clean_metrics`)."""
    return clean_metrics(read_metrics(run_dir))


def curve_frame(run_dir: str | Path):
    """``metrics.jsonl`` as a DataFrame (one row per record; NaN where a record lacks a metric)."""
    import pandas as pd

    df = pd.DataFrame(read_records(run_dir))
    for col in ("step", "time", *CURVE_METRICS):
        if col not in df:
            df[col] = np.nan
    return df


def latest(df, column: str) -> float | None:
    """The last logged value of ``column`` (None when never logged)."""
    if column not in df:
        return None
    values = df[column].dropna()
    return float(values.iloc[-1]) if len(values) else None


def live_tiles(df) -> list[tuple[str, str]]:
    """(label, text) of the live panel's headline numbers: loss, learning rate, kNN top-1, images/s; "—" when never logged."""
    tiles = []
    for name, key, fmt in LIVE_TILES:
        value = latest(df, key)
        tiles.append((name, fmt.format(value) if value is not None else "—"))
    return tiles


def has_evolution(run_dir: str | Path) -> bool:
    """Whether the run has embedding snapshots (``evolution.npz``)."""
    return (Path(run_dir) / EVOLUTION).exists()


def run_table(statuses) -> pd.DataFrame:
    """One row per :class:`~ssl_viz.jobs.RunStatus`: what, how far, how good, how long, where."""
    import pandas as pd

    rows = []
    for s in statuses:
        cfg = read_config_dict(s.run_dir) or {}
        card = read_card(s.run_dir) or {}
        metrics = dict(card.get("metrics") or {})
        df = curve_frame(s.run_dir)
        for key in _MONITOR_KEYS:
            value = latest(df, key)
            if value is not None:
                metrics[key] = value
        rows.append({
            "run": s.name, "method": cfg.get("method", card.get("method")), "encoder": cfg.get("encoder", card.get("encoder")),
            "dataset": cfg.get("dataset", card.get("dataset")), "status": s.state,
            "steps": f"{s.step or card.get('steps', 0)}/{getattr(s, 'total_text', '?')}" if s.total_steps or s.step else str(card.get("steps", 0)),
            "kNN": metrics.get("knn_top1"), "linear": metrics.get("linear_top1"), "alignment": metrics.get("alignment"),
            "uniformity": metrics.get("uniformity"), "wall time (s)": round(s.elapsed or float(card.get("seconds") or 0.0), 1),
            "device": s.device or card.get("device"), "augment": cfg.get("augment"), "batch": cfg.get("batch_size"),
            "τ": (cfg.get("method_cfg") or {}).get("temperature"), "seed": cfg.get("seed"), "checkpoint": s.has_checkpoint,
            "path": str(s.run_dir),
        })
    columns = ["run", "method", "encoder", "dataset", "status", "steps", "kNN", "linear", "alignment", "uniformity",
               "wall time (s)", "device", "augment", "batch", "τ", "seed", "checkpoint", "path"]
    return pd.DataFrame(rows, columns=columns)


def plane_points(run_dirs) -> pd.DataFrame:
    """Every kNN-monitor record with alignment and uniformity: columns run, step, alignment, uniformity, knn_top1, last."""
    import pandas as pd

    rows = []
    for run_dir in run_dirs:
        recs = [r for r in read_records(run_dir) if "alignment" in r and "uniformity" in r]
        for i, r in enumerate(recs):
            rows.append({"run": Path(run_dir).name, "step": r["step"], "alignment": r["alignment"], "uniformity": r["uniformity"],
                         "knn_top1": r.get("knn_top1"), "last": i == len(recs) - 1})
    return pd.DataFrame(rows, columns=["run", "step", "alignment", "uniformity", "knn_top1", "last"])


# ---------------------------------------------------------------------------- figures


def _palette(i: int) -> str:
    from plotly.colors import qualitative

    colors = qualitative.Plotly + qualitative.D3
    return colors[i % len(colors)]


def curves_figure(frames: dict, metric: str, x: str = "step", log_y: bool = False):
    """One line per run of ``metric`` against ``x`` (``step``, ``time`` or ``epoch``); ``frames``: name -> curve_frame."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (name, df) in enumerate(frames.items()):
        if metric not in df or x not in df:
            continue
        d = df[[x, metric]].dropna()
        fig.add_trace(go.Scatter(x=d[x], y=d[metric], mode="lines+markers" if len(d) < 30 else "lines", name=name,
                                 line=dict(color=_palette(i))))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), xaxis_title=x, yaxis_title=metric,
                      yaxis_type="log" if log_y else None, legend=dict(orientation="h", y=-0.2))
    return fig


def live_figure(df):
    """Six small panels of one run: loss, learning rate, images/s, kNN top-1, alignment, uniformity; the kNN panel
    with the monitor's yardsticks as reference lines (raw pixels, the untrained encoder) when the run recorded them."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = ("loss", "learning rate", "images / s", "kNN top-1", "alignment (lower: views closer)", "uniformity (lower: more spread)")
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles, vertical_spacing=0.18)
    for i, metric in enumerate(CURVE_METRICS):
        d = df[["step", metric]].dropna() if metric in df else df.iloc[:0]
        fig.add_trace(go.Scatter(x=d["step"], y=d[metric], mode="lines+markers" if len(d) < 30 else "lines", name=metric,
                                 line=dict(color=_palette(i)), showlegend=False), row=i // 3 + 1, col=i % 3 + 1)
    knn_at = CURVE_METRICS.index("knn_top1")
    for key, text, dash in (("knn_raw_pixels", "raw pixels", "dot"), ("knn_untrained", "untrained encoder", "dash")):
        value = latest(df, key)
        if value is not None:  # the monitor's yardsticks, same protocol (KnnMonitor records them at step 0)
            fig.add_hline(y=value, line=dict(color="#888", dash=dash, width=1), annotation_text=f"{text} {value:.3f}",
                          annotation_position="bottom right", annotation_font=dict(size=10, color="#666"),
                          row=knn_at // 3 + 1, col=knn_at % 3 + 1)
    fig.update_layout(height=430, margin=dict(l=10, r=10, t=40, b=10))
    fig.update_xaxes(title_text="step", row=2)
    return fig


def plane_figure(points):
    """The alignment-uniformity plane: a path per run along training, its last point large, coloured by kNN top-1."""
    import plotly.graph_objects as go

    fig = go.Figure()
    knn = points["knn_top1"].astype(float)
    cmin, cmax = (float(knn.min()), float(knn.max())) if knn.notna().any() else (0.0, 1.0)
    for i, (name, d) in enumerate(points.groupby("run", sort=False)):
        d = d.sort_values("step")
        hover = [f"{name}<br>step {s}<br>kNN {k:.3f}" if k == k and k is not None else f"{name}<br>step {s}"
                 for s, k in zip(d["step"], d["knn_top1"].astype(float))]
        fig.add_trace(go.Scatter(
            x=d["uniformity"], y=d["alignment"], mode="lines+markers", name=name, text=hover, hoverinfo="text",
            line=dict(color=_palette(i), width=1),
            marker=dict(size=[14 if last else 7 for last in d["last"]], color=d["knn_top1"].astype(float), cmin=cmin, cmax=cmax,
                        colorscale="Viridis", showscale=i == 0, colorbar=dict(title="kNN"), line=dict(color=_palette(i), width=2))))
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.2),
                      xaxis_title="uniformity  log E exp(-2||f(x)-f(y)||²)  (lower: more uniform)",
                      yaxis_title="alignment  E ||f(x)-f(x+)||²  (lower: more aligned)")
    return fig


# ---------------------------------------------------------------------------- embedding evolution


@dataclass
class Evolution:
    steps: np.ndarray          # [T]
    embeddings: np.ndarray     # [T, N, D] unit rows
    labels: np.ndarray         # [N]
    class_names: list[str]


def load_evolution(run_dir: str | Path) -> Evolution | None:
    """The snapshots of ``RUN_DIR/evolution.npz`` (None when there are none or the file is unreadable)."""
    data = read_evolution(run_dir)
    if data is None:
        return None
    return Evolution(data["steps"], data["embeddings"].astype(np.float32), data["labels"], [str(c) for c in data["class_names"]])


def orthogonal_procrustes(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, float]:
    """The rotation/reflection ``R`` (``[D, D]``, ``R^T R = I``) and scale ``s`` minimising ``||s A R - B||_F``.

    ``R = U V^T`` from the SVD ``A^T B = U S V^T``; ``s = trace(S) / ||A||_F^2`` (Schönemann 1966).
    """
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if A.shape != B.shape:
        raise ValueError(f"Procrustes needs equal shapes, got {A.shape} and {B.shape}")
    U, S, Vt = np.linalg.svd(A.T @ B)
    return U @ Vt, float(S.sum() / max((A ** 2).sum(), 1e-12))


def procrustes_align(X: np.ndarray, Y: np.ndarray, scale: bool = True, center: bool = True) -> np.ndarray:
    """``X`` moved onto ``Y`` by translation (``center``), rotation/reflection and scale (``scale``)."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    mx, my = (X.mean(0), Y.mean(0)) if center else (np.zeros(X.shape[1]), np.zeros(Y.shape[1]))
    R, s = orthogonal_procrustes(X - mx, Y - my)
    return ((X - mx) @ R) * (s if scale else 1.0) + my


def evolution_frames(evo: Evolution, method: str = "pca", max_frames: int = 30, cache_key: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates ``[T', N, 2]`` of the snapshots in one frame of reference, and their steps ``[T']``.

    ``pca``: each snapshot is rotated onto the last one in embedding space (orthogonal Procrustes,
    no scaling, so growing spread is real), then all share the last snapshot's two principal axes.
    ``umap``: one UMAP per snapshot (cached on disk), each 2-D map aligned to the last by Procrustes
    with scaling (UMAP's scale is arbitrary). At most ``max_frames`` evenly spaced snapshots (last kept).
    """
    T = len(evo.steps)
    pick = np.unique(np.linspace(0, T - 1, min(T, max_frames)).round().astype(int))
    Z, steps = evo.embeddings[pick], evo.steps[pick]
    ref = Z[-1].astype(np.float64)
    if method == "pca":
        aligned = [Z_t.astype(np.float64) @ orthogonal_procrustes(Z_t, ref)[0] for Z_t in Z]
        mean = ref.mean(0)
        _, _, Vt = np.linalg.svd(ref - mean, full_matrices=False)
        coords = np.stack([(A - mean) @ Vt[:2].T for A in aligned])
    elif method == "umap":
        from ssl_viz.analysis.projection import project_cached

        maps = [project_cached(Z_t, {**(cache_key or {}), "evolution_step": int(s)}, "umap", 2) for Z_t, s in zip(Z, steps)]
        coords = np.stack([procrustes_align(m, maps[-1]) for m in maps])
    else:
        raise ValueError(f"unknown projection {method!r}; choose pca or umap")
    return coords.astype(np.float32), steps


def evolution_figure(coords: np.ndarray, labels: np.ndarray, steps: np.ndarray, class_names: list[str] | None = None, title: str = ""):
    """An animation (plotly frames, play button and step slider) of ``coords [T, N, 2]``, one trace per class."""
    import plotly.graph_objects as go

    classes = [int(c) for c in np.unique(labels)]
    names = [class_names[c] if class_names and 0 <= c < len(class_names) else str(c) for c in classes]

    def traces(t: int) -> list:
        return [go.Scatter(x=coords[t, labels == c, 0], y=coords[t, labels == c, 1], mode="markers", name=n,
                           marker=dict(size=6, color=_palette(i), opacity=0.8)) for i, (c, n) in enumerate(zip(classes, names))]

    lo, hi = coords.reshape(-1, 2).min(0), coords.reshape(-1, 2).max(0)
    pad = 0.05 * (hi - lo + 1e-9)
    frames = [go.Frame(data=traces(t), name=str(int(s))) for t, s in enumerate(steps)]
    play = dict(label="▶ play", method="animate", args=[None, {"frame": {"duration": 400, "redraw": True}, "fromcurrent": True,
                                                              "transition": {"duration": 250}}])
    pause = dict(label="❚❚ pause", method="animate", args=[[None], {"frame": {"duration": 0, "redraw": False}, "mode": "immediate"}])
    slider = dict(active=len(frames) - 1, currentvalue={"prefix": "step "}, pad={"t": 40},
                  steps=[dict(label=f.name, method="animate", args=[[f.name], {"frame": {"duration": 0, "redraw": True}, "mode": "immediate"}])
                         for f in frames])
    fig = go.Figure(data=traces(len(frames) - 1), frames=frames)
    fig.update_layout(title=title or None, height=560, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis=dict(range=[lo[0] - pad[0], hi[0] + pad[0]], zeroline=False),
                      yaxis=dict(range=[lo[1] - pad[1], hi[1] + pad[1]], zeroline=False, scaleanchor="x"),
                      updatemenus=[dict(type="buttons", buttons=[play, pause], x=0, y=-0.08, xanchor="left", direction="left")],
                      sliders=[slider])
    return fig


__all__ = [
    "COMPARE_COLUMNS", "CURVE_METRICS", "EVOLUTION", "Evolution", "SCORE_COLUMNS", "TABLE_COLUMNS", "clean_metrics", "curve_frame",
    "curves_figure", "evolution_figure", "evolution_frames", "has_evolution", "latest", "live_figure", "live_tiles", "load_evolution",
    "orthogonal_procrustes", "plane_figure", "plane_points", "procrustes_align", "read_records", "run_table",
]
