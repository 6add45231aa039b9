"""The closed loop's timeline: one record per simulated day, as a table and as a plot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DayRecord:
    """One row of the timeline."""

    ds: str
    daily_state: str = "-"
    monitor_state: str = "-"
    ctr: float | None = None  # recommended impressions (rec_version set)
    ctr_exploration: float | None = None
    recommended_impressions: int = 0
    regret_ratio: float | None = None  # simulator: share of the oracle's expected clicks the lists missed
    pred_obs_ratio: float | None = None  # serving model's predicted / observed CTR of its impressions
    exploration_auc: float | None = None  # serving model's click AUC on the exploration impressions
    exploration_gauc: float | None = None  # the same per user (within-user ranking)
    served_model: str | None = None  # the model whose lists users saw on ds (published at the end of ds-1)
    champion: str | None = None  # the model whose lists were live at the end of ds
    trained: bool = False  # the daily run trained and registered a model
    retrain_fired: bool = False
    reasons: list[str] = field(default_factory=list)
    retrain_conf: dict | None = None
    retrain_state: str | None = None
    retrain_blessed: bool | None = None
    # after a promoting retrain: the same day replayed with the demoted model's lists (see replay_ctr)
    replay: dict | None = None
    seconds: float = 0.0


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _f3(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_timeline(records: list[DayRecord], drift_days: list[str] | None = None) -> str:
    drift_days = drift_days or []
    lines = [
        f"{'day':<12}{'CTR rec':>9}{'CTR expl':>10}{'rec impr':>10}{'served by':>21}"
        f"{'retrain':>9}{'champion':>21}{'CTR prev':>10}{'regret':>8}{'pred/obs':>9}"
        f"{'AUC expl':>9}{'AUC prev':>9}{'GAUC expl':>10}{'GAUC prev':>10}  note"
    ]
    for r in records:
        notes = []
        if r.ds in drift_days:
            notes.append("DRIFT")
        if r.trained:
            notes.append("daily trained")
        if r.retrain_fired:
            notes.append("retrain " + ("promoted" if r.retrain_blessed else "not blessed"))
        elif r.reasons:
            notes.append("held: " + r.reasons[-1][:60])
        lines.append(
            f"{r.ds:<12}{_f(r.ctr):>9}{_f(r.ctr_exploration):>10}{r.recommended_impressions:>10}"
            f"{r.served_model or '-':>21}{'FIRED' if r.retrain_fired else 'no':>9}"
            f"{r.champion or '-':>21}{_f((r.replay or {}).get('ctr_replay')):>10}"
            f"{'-' if r.regret_ratio is None else f'{r.regret_ratio:.0%}':>8}"
            f"{'-' if r.pred_obs_ratio is None else f'{r.pred_obs_ratio:.2f}':>9}"
            f"{_f3(r.exploration_auc):>9}{_f3((r.replay or {}).get('exploration_auc_replay')):>9}"
            f"{_f3(r.exploration_gauc):>10}{_f3((r.replay or {}).get('exploration_gauc_replay')):>10}"
            f"  {', '.join(notes)}"
        )
    fired = [r for r in records if r.retrain_fired]
    for r in fired:
        lines.append(f"retrain on {r.ds}: conf {json.dumps(r.retrain_conf)}")
    if any(r.replay for r in records):
        lines.append(
            "CTR prev: the same day replayed in the simulator with the demoted model's lists (same users, "
            "sessions and random draws)"
        )
    if any(r.regret_ratio is not None for r in records):
        lines.append("regret: share of the oracle lists' expected clicks the served lists missed (simulator)")
    if any(r.pred_obs_ratio is not None for r in records):
        lines.append(
            "pred/obs: the serving model's mean predicted click probability / observed CTR of its lists"
        )
    if any(r.exploration_auc is not None for r in records):
        lines.append(
            "AUC expl: the serving model's click AUC on the exploration impressions (not its picks); "
            "GAUC: per user; prev: the demoted model's on the same impressions"
        )
    return "\n".join(lines)


def plot_timeline(records: list[DayRecord], path: str | Path, drift_days: list[str] | None = None) -> Path:
    """CTR of recommended vs exploration impressions per day; drift and retrains marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = list(range(len(records)))
    labels = [r.ds[5:] for r in records]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(x, [r.ctr if r.ctr is not None else float("nan") for r in records], "o-", label="CTR recommended")
    ax.plot(
        x,
        [r.ctr_exploration if r.ctr_exploration is not None else float("nan") for r in records],
        "s--",
        color="grey",
        label="CTR exploration",
    )
    if any(r.replay for r in records):
        ax.plot(
            x,
            [(r.replay or {}).get("ctr_replay") or float("nan") for r in records],
            "x:",
            color="tab:red",
            label="CTR had the demoted model stayed (replay)",
        )
    for i, r in enumerate(records):
        if r.ds in (drift_days or []):
            ax.axvline(i, color="red", linestyle=":", label="drift")
        if r.retrain_fired:
            ax.axvline(i + 0.5, color="green", linestyle="-.", label="retrain (lists live next day)")
    handles, names = ax.get_legend_handles_labels()
    uniq = dict(zip(names, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), loc="best", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_xlabel("day")
    ax.set_ylabel("click-through rate")
    ax.set_title("recsys closed loop: online CTR, drift and retrain")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
