"""The catalog ranking figures of an evaluation, for people: the HTML report section, the MLflow metric
names and the demo summary's lines (issue 13, point 4). One place, so the three say the same."""

from __future__ import annotations

import html

import numpy as np

FIGURES = ("recall_10", "recall_50", "ndcg_10", "map_10", "coverage_10", "model_share")


def ranking_metrics(ranking: dict | None) -> dict[str, float]:
    """``catalog_<scorer>_<figure>`` for MLflow (finite values only)."""
    out = {}
    for name, figs in ((ranking or {}).get("figures") or {}).items():
        for f in FIGURES:
            v = figs.get(f)
            if isinstance(v, int | float) and np.isfinite(v):
                out[f"catalog_{name}_{f}"] = float(v)
    return out


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.4f}"


def ranking_html(ranking: dict | None) -> str:
    """The report's section: one row per scorer, the gate's check under it."""
    if not ranking or not ranking.get("figures"):
        return (
            "<p class=muted>No catalog ranking figures (no held-out engagements, or a partition built "
            "before they existed).</p>"
        )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("scorer", *FIGURES))
    rows = "".join(
        "<tr><td>"
        + html.escape(n)
        + "</td>"
        + "".join(f"<td>{_fmt(f.get(k))}</td>" for k in FIGURES)
        + "</tr>"
        for n, f in ranking["figures"].items()
    )
    check = ranking.get("check") or {}
    note = (
        f"<p>Gate check <b>{html.escape(check.get('check', ''))}</b>: "
        f"{'passed' if check.get('passed') else 'FAILED'}: {html.escape(check.get('detail', ''))}</p>"
        if check
        else ""
    )
    intro = (
        f"<p class=muted>{ranking.get('users', 0)} users with held-out engagements; each scorer ranks the "
        f"visible catalog ({ranking.get('catalog', '?')} videos) minus what the user engaged with before. "
        "Baselines fitted on the training window only. Users a scorer does not know get the popularity "
        "fallback (model_share = share it served).</p>"
    )
    return intro + f"<table><tr>{head}</tr>{rows}</table>" + note


def summary_lines(ranking: dict | None) -> list[str]:
    """The demo summary's lines: Recall@10 and NDCG@10 of the model and of each baseline."""
    if not ranking or not ranking.get("figures"):
        return []
    out = [f"Catalog ranking on the held-out day ({ranking.get('users', 0)} users):"]
    for name, f in ranking["figures"].items():
        out.append(
            f"  {name:<28} Recall@10 {_fmt(f.get('recall_10'))}   NDCG@10 {_fmt(f.get('ndcg_10'))}"
            f"   Recall@50 {_fmt(f.get('recall_50'))}   model share {_fmt(f.get('model_share'))}"
        )
    return out
