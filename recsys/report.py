"""The evaluation report: one self-contained HTML page per evaluated run (inline CSS, PNGs as base64).

It shows, from the result of :func:`recsys.evaluate.evaluate_run` alone: the gate's decision and each
check, the per-task and ranking metrics of the candidate next to the champion and the baselines,
reliability diagrams per binary task, click metrics by slate position and by user activity segment.
"""

from __future__ import annotations

import base64
import html
import io
import math

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:.85em;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}.ok{color:#11772e;font-weight:600}.bad{color:#b3261e;font-weight:600}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0}.banner.ok{background:#e6f4ea}
.banner.bad{background:#fce8e6}.muted{color:#777;font-size:.85em}img{max-width:100%}
"""


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left else ""}">{_fmt(c)}</td>' for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scorers(result: dict) -> dict[str, dict]:
    out = {"candidate": result["candidate"]}
    if result.get("champion"):
        out["champion"] = result["champion"]
    for name, m in (result.get("baselines") or {"popularity": result.get("popularity") or {}}).items():
        out[f"baseline {name}"] = m
    return out


def metrics_table(result: dict) -> str:
    scorers = _scorers(result)
    keys: list[str] = []
    for m in scorers.values():
        keys += [k for k in m if k not in keys]
    rows = [[k] + [m.get(k) for m in scorers.values()] for k in keys]
    return _table(["metric", *scorers], rows)


def calibration_plots(result: dict) -> str:
    cal = (result.get("slices") or {}).get("calibration") or {}
    if not cal:
        return "<p class=muted>no calibration data</p>"
    plt = _plt()
    tasks = list(
        dict.fromkeys(t for per_task in cal.values() for t in per_task)
    )  # the binary tasks, in order
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.3), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        ax.plot([0, 1], [0, 1], ls="--", c="#999", lw=1, label="perfect")
        for name, per_task in cal.items():
            bins = per_task.get(task) or []
            if bins:
                ax.plot([b["mean_pred"] for b in bins], [b["observed"] for b in bins], marker="o", label=name)
        ax.set_title(f"{task} reliability")
        ax.set_xlabel("mean predicted")
        ax.set_ylabel("observed rate")
        ax.legend(fontsize=7)
    return _png(fig)


def segment_section(rows: list[dict], column: str, title: str) -> str:
    if not rows:
        return f"<p class=muted>no {html.escape(column)} column in the test split</p>"
    names = [k[:-4] for k in rows[0] if k.endswith("_auc") and not k.endswith("_gauc")]
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
    x = [str(r[column]) for r in rows]
    a1.plot(x, [r["ctr"] for r in rows], marker="o", c="k", label="observed CTR")
    for n in names:
        a1.plot(x, [r[f"{n}_pred"] for r in rows], marker=".", label=f"{n} predicted")
        a2.plot(x, [r[f"{n}_auc"] for r in rows], marker="o", label=n)
    a1.set_title(f"CTR vs predicted click by {title}")
    a2.set_title(f"click AUC by {title}")
    for a in (a1, a2):
        a.set_xlabel(title)
        a.legend(fontsize=7)
    kinds = [m for m in ("pred", "auc", "gauc") if f"{names[0]}_{m}" in rows[0]] if names else []
    header = [column, "rows", "ctr"] + [f"{n} {m}" for n in names for m in kinds]
    table = _table(
        header,
        [[r[column], r["rows"], r["ctr"]] + [r.get(f"{n}_{m}") for n in names for m in kinds] for r in rows],
    )
    return _png(fig) + table


def gate_section(result: dict) -> str:
    dec = result["decision"]
    cls = "ok" if dec["blessed"] else "bad"
    head = "BLESSED: may become champion" if dec["blessed"] else "NOT BLESSED: the champion stays"
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in dec["reasons"])
    rows = [
        [
            c["check"],
            "passed" if c["passed"] else "FAILED",
            c.get("value"),
            c.get("threshold"),
            c.get("shortfall") if not c["passed"] else None,
            c["detail"],
        ]
        for c in dec["checks"]
    ]
    table = _table(["check", "result", "value", "threshold", "short by", "detail"], rows)
    table = table.replace('<td class="">FAILED</td>', '<td class="bad">FAILED</td>')
    table = table.replace('<td class="">passed</td>', '<td class="ok">passed</td>')
    return f'<div class="banner {cls}"><b>{head}</b><ul>{reasons}</ul></div>{table}'


def _ranking_html(ranking: dict | None) -> str:
    from recsys.catalog_report import ranking_html

    return ranking_html(ranking)


def render_report(result: dict, tags: dict[str, str] | None = None) -> str:
    """The whole page as one string (no external resources)."""
    tags = tags or {}
    k = result.get("k", 10)
    context = {
        "ds": result.get("ds"),
        "test rows": result.get("test_rows"),
        "test users": result.get("test_users"),
        "champion version": result.get("champion_version") or "none",
        **{t: v for t, v in tags.items() if not t.startswith("gate.")},
    }
    truth = result.get("truth")
    truth_note = (
        (
            f"<p class=muted>true_ndcg_{k}: DCG@{k} of the simulator's true utilities of each "
            f"scorer's top {k} over the visible catalog ({truth['catalog']} videos, {truth['users']} "
            "users) divided by the oracle's.</p>"
        )
        if truth
        else ""
    )
    slices = result.get("slices") or {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>recsys evaluation {html.escape(str(result.get('ds')))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Evaluation of the candidate ranker, test day {html.escape(str(result.get('ds')))}</h1>",
        _table(["", "value"], [[a, b] for a, b in context.items()]),
        "<h2>Gate decision</h2>",
        gate_section(result),
        "<h2>Metrics: candidate vs champion vs baselines</h2>",
        f"<p class=muted>Same test split for every scorer. ndcg/recall/map/coverage_{k}: each test user's "
        f"impressions of the day ranked by the scorer, clicks as relevance; coverage = share of the day's "
        "videos in some top-k list.</p>",
        truth_note,
        metrics_table(result),
        "<h2>Catalog ranking: candidate vs champion vs baselines</h2>",
        _ranking_html(result.get("ranking")),
        "<h2>Calibration (reliability diagrams)</h2>",
        calibration_plots(result),
        "<h2>By slate position</h2>",
        segment_section(slices.get("by_position") or [], "position", "position"),
        "<h2>By user activity segment</h2>",
        segment_section(slices.get("by_activity") or [], "activity", "activity"),
        "</body></html>",
    ]
    return "\n".join(parts)
