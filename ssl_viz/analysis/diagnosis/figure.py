"""The diagnosis as plotly figures: label damage per augmentation (coloured by verdict) and encoder invariance at one
strength, and the dose-response curves (label damage against strength)."""

from __future__ import annotations

from ssl_viz.analysis.diagnosis.dose import DoseResponse
from ssl_viz.analysis.diagnosis.report import VERDICT_COLORS, VERDICTS, Diagnosis, Thresholds


def diagnosis_figure(diag: Diagnosis):
    """Plotly figure: label damage per augmentation (bars coloured by verdict, thresholds dashed) and,
    when an encoder was measured, its invariance score (diamonds) on the same axis."""
    import plotly.graph_objects as go

    names = [a.name for a in diag.augmentations]
    fig = go.Figure()
    for verdict in VERDICTS:
        rows = [a for a in diag.augmentations if a.verdict == verdict]
        if rows:
            fig.add_bar(x=[a.name for a in rows], y=[a.label_damage for a in rows], name=f"label damage: {verdict}",
                        marker_color=VERDICT_COLORS[verdict],
                        customdata=[[a.probe_transformed, a.probe_adapted] for a in rows],
                        hovertemplate="%{x}<br>damage %{y:.2f}<br>probe on T(x) %{customdata[0]:.2f}, adapted %{customdata[1]:.2f}<extra></extra>")
    inv = [a.invariance for a in diag.augmentations]
    if any(v is not None for v in inv):  # below 0 (T moves f(x) further than a random image) is drawn at 0, open
        shown = [None if v is None else max(0.0, v) for v in inv]
        symbols = ["diamond-open" if v is not None and v < 0 else "diamond" for v in inv]
        fig.add_scatter(x=names, y=shown, mode="markers", name="encoder invariance", customdata=inv,
                        marker=dict(symbol=symbols, size=11, color="#1f77b4", line=dict(width=2, color="#1f77b4")),
                        hovertemplate="%{x}<br>invariance %{customdata:.2f}<extra></extra>")
    t = Thresholds()
    fig.add_hline(y=t.harmful, line_dash="dash", line_color=VERDICT_COLORS["harmful"], annotation_text="harmful")
    fig.add_hline(y=t.suitable, line_dash="dot", line_color=VERDICT_COLORS["suitable"], annotation_text="suitable")
    label = diag.label or "label"
    fig.update_layout(barmode="overlay", height=380, margin=dict(l=10, r=10, t=40, b=10), yaxis_range=[-0.05, 1.05],
                      title=f"{diag.dataset} labelled by {label}: label damage (0 keeps, 1 destroys) and encoder invariance",
                      xaxis=dict(categoryorder="array", categoryarray=names), legend=dict(orientation="h", y=-0.2))
    return fig


def dose_figure(resp: DoseResponse):
    """Plotly figure of a :class:`~ssl_viz.analysis.diagnosis.DoseResponse`: label damage against strength, one line per
    augmentation (markers coloured by the verdict at each strength, the setting in the hover), with the harmful
    threshold dashed and the safe one dotted. Probability-type augmentations (flip, grayscale, rotate90) are
    drawn dotted: their strength is the probability."""
    import plotly.graph_objects as go

    t = Thresholds(**resp.thresholds) if resp.thresholds else Thresholds()
    fig = go.Figure()
    for c in resp.curves:
        fig.add_scatter(x=c.strengths, y=c.label_damage, mode="lines+markers", name=c.name,
                        line=dict(dash="dot" if c.kind == "probability" else "solid"),
                        marker=dict(size=9, color=[VERDICT_COLORS[v] for v in c.verdicts], line=dict(width=1, color="#333")),
                        customdata=[[s, v] for s, v in zip(c.settings, c.verdicts)],
                        hovertemplate=f"{c.name}<br>%{{customdata[0]}}<br>damage %{{y:.2f}} (%{{customdata[1]}})<extra></extra>")
    fig.add_hline(y=t.harmful, line_dash="dash", line_color=VERDICT_COLORS["harmful"], annotation_text="harmful")
    fig.add_hline(y=t.safe, line_dash="dot", line_color=VERDICT_COLORS["suitable"], annotation_text="safe")
    label = resp.label or "label"
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=40, b=10), yaxis_range=[-0.05, 1.05],
                      xaxis=dict(title="strength (probability for flip, grayscale, rotate90)", tickvals=resp.strengths),
                      yaxis_title="label damage (0 keeps, 1 destroys)",
                      title=f"{resp.dataset} labelled by {label}: label damage against strength")
    return fig
