"""Champion/challenger: evaluate a trained candidate against the champion and the baselines, on record.

Loads the candidate from its MLflow run and the current champion from the registry, scores both and the
baselines on the held-out day (:func:`recsys.evaluate.evaluate_run`), lets the gate decide
(:mod:`recsys.gate`), and writes metrics, tags and the report into the candidate's run.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from recsys.config import Settings


def challenge(
    settings: Settings,
    ds: date,
    features_dir: Path,
    run_id: str,
    model_uri: str | None = None,
    *,
    world=None,
) -> dict:
    """Evaluate run ``run_id`` on the test split of ``features_dir``; the gate's decision with reasons.

    ``world``: the catalog's simulated world, for the true-utility figures (None elsewhere).
    """
    import mlflow

    from recsys.evaluate import evaluate_run, log_evaluation
    from recsys.features.build import window_start
    from recsys.gate import log_decision
    from recsys.registry import NoChampionError, load_ranker, load_ranker_dir
    from recsys.tracking import configure

    configure(settings)
    local = mlflow.artifacts.download_artifacts(model_uri or f"runs:/{run_id}/ranker")
    candidate = load_ranker_dir(Path(local) / "artifacts")
    try:
        champion = load_ranker(settings)
    except NoChampionError:
        champion = None
    result = evaluate_run(
        candidate, champion, features_dir, settings.evaluate, world=world, ds=ds, seed=settings.seed
    )
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    trigger = run.data.tags.get("trigger", "unknown")
    variant = run.data.tags.get("variant", settings.model.variant)
    tags = log_evaluation(
        run_id,
        result,
        {
            "ds": str(ds),
            "trigger": trigger,
            "variant": variant,
            "window_days": str(settings.features.window_days),
            "data_window": f"{window_start(ds, settings.features.window_days)}..{ds}",
            "source": settings.source,
        },
    )
    if run.info.run_name == f"{variant}-{ds}":  # the default name: make runs distinguishable in compare view
        client.update_run(run_id, name=f"{variant}-{ds}-{trigger}")
    dec = result["decision"]
    log_decision(dec, result, settings.evaluate.k, ds)
    return {
        "run_id": run_id,
        "model_uri": model_uri,
        "blessed": dec["blessed"],
        "reasons": dec["reasons"],
        "failed_checks": tags["gate.failed_checks"],
        "report": "evaluation/report.html",
        "metrics": {k_: v for k_, v in result["candidate"].items() if not k_.endswith("_rows")},
        "ranking": result.get("ranking"),
    }
