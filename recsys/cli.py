"""The ``recsys`` command: every stage runnable by hand, the demo, and the operational verbs.

recsys run collect --ds 2026-01-03      one stage for one day
recsys demo --days 4                    the daily DAG under Airflow for several days, then a summary
recsys demo drift --days 8              the closed loop: drift -> monitor -> retrain -> recovery
recsys backfill [--from D1] [--to D2]   import a source's history day by day (resumable)
recsys summary                          what the last runs produced
recsys recommend USER_ID                a user's live list (what an app reads)
recsys model rollback                   champion back to previous
recsys publish rollback                 live recommendations back to the previous version
recsys alerts relay                     Alertmanager webhook -> recsys_retrain runs (:8081)
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import date, timedelta
from enum import StrEnum

import typer

from recsys.errors import RecsysError

# Errors an operator can act on, printed as one line (module, class): matched through sys.modules, so
# recognising them imports nothing heavy. Any other exception is a bug and keeps its traceback.
DOMAIN_ERRORS = (
    ("recsys.privacy.crypto", "KeyConfigError"),
    ("recsys.registry", "NoChampionError"),
    ("recsys.serving.publish", "PublishCheckError"),
    ("recsys.data.validate", "BatchValidationError"),
    ("recsys.data.schema", "SchemaError"),
    ("recsys.privacy.anonymize", "PolicyError"),
)

API_DOC = "The Python API (the seed's functions, as one runnable walk-through): docs/api.md"
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, epilog=API_DOC)
model_app = typer.Typer(no_args_is_help=True, help="The model registry.")
publish_app = typer.Typer(no_args_is_help=True, help="The recommendations tables.")
metrics_app = typer.Typer(no_args_is_help=True, help="Prometheus metrics.")
app.add_typer(metrics_app, name="metrics")
alerts_app = typer.Typer(no_args_is_help=True, help="Alerting: the Alertmanager -> Airflow relay.")
app.add_typer(alerts_app, name="alerts")
demo_app = typer.Typer(help="Demos under the embedded Airflow: the daily DAG, or the closed loop with drift.")
app.add_typer(demo_app, name="demo")


def _privacy_app() -> typer.Typer:
    from recsys.privacy.cli import app as privacy

    return privacy


app.add_typer(_privacy_app(), name="privacy")
app.add_typer(model_app, name="model")
app.add_typer(publish_app, name="publish")


class Stage(StrEnum):
    """The stages ``recsys run`` can run (the functions of :mod:`recsys.stages`): a choice list in --help."""

    land = "land"
    simulate = "simulate"
    collect = "collect"
    validate = "validate"
    anonymize = "anonymize"
    features = "features"
    should_train = "should_train"
    train = "train"
    train_retrieval = "train_retrieval"
    evaluate = "evaluate"
    register = "register"
    recommend = "recommend"
    publish = "publish"
    monitor = "monitor"


STAGES = tuple(s.value for s in Stage)


def _settings():
    from recsys.config import load_settings

    return load_settings()


def _date(ds: str) -> date:
    """A logical date on the command line (Typer's ``parser``: the command gets a ``date``); a bad one is a
    one-line error."""
    if isinstance(ds, date):
        return ds
    try:
        return date.fromisoformat(ds)
    except ValueError:
        raise RecsysError(f"bad date {ds!r}: expected YYYY-MM-DD") from None


def _echo(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@app.callback()
def main_callback(
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    json_logs: bool = typer.Option(False, "--json-logs", help="structured JSON log lines"),
):
    from recsys.logs import setup_logging

    setup_logging(logging.DEBUG if verbose else logging.INFO, json_format=json_logs)


@app.command()
def run(
    stage: Stage = typer.Argument(..., help="the stage to run", case_sensitive=False),
    ds: date = typer.Option(..., parser=_date, metavar="YYYY-MM-DD", help="logical date"),
    run_id: str = typer.Option(None, help="MLflow run id (evaluate, register)"),
    blessed: bool = typer.Option(False, help="register: promote to champion"),
):
    """Run one stage for one day."""
    from recsys import stages

    fn = getattr(stages, stage.value)
    if stage in (Stage.evaluate, Stage.register) and not run_id:
        raise RecsysError(
            f"recsys run {stage.value} needs --run-id (the MLflow run of the trained candidate)"
        )
    kwargs = {}
    if stage is Stage.evaluate:
        kwargs["run_id"] = run_id
    if stage is Stage.register:
        kwargs.update(run_id=run_id, blessed=blessed)
    _echo(fn(ds, _settings(), **kwargs))


@demo_app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    days: int = typer.Option(4, help="consecutive simulated days"),
    start: date = typer.Option("2026-01-01", parser=_date, metavar="YYYY-MM-DD", help="first logical date"),
):
    """Run recsys_daily with Airflow (``airflow dags test``) for several days, then print a summary."""
    if ctx.invoked_subcommand is not None:
        return
    from recsys.data.importers import SOURCES, available_days
    from recsys.demo import run_demo

    settings = _settings()
    first = start
    if settings.source in SOURCES:  # a dataset: its own days, the last consecutive ones
        have = available_days(settings)
        if not have:
            raise typer.BadParameter(f"no days with data under {settings.source_path}")
        run = [have[-1]]
        for d in reversed(have[:-1]):
            if len(run) == days or (run[0] - d).days != 1:
                break
            run.insert(0, d)
        first, days = run[0], len(run)
        if have[0] < first:  # the history before them is imported first (issue 13): resumable, per day
            from recsys.backfill import backfill as import_history

            typer.echo(f"{settings.source}: backfilling {have[0]}..{first - timedelta(days=1)} first")
            _echo(import_history(settings, have[0], first - timedelta(days=1)))
        typer.echo(f"{settings.source}: running the data's last {days} consecutive day(s) from {first}")
    raise typer.Exit(run_demo(first, days))


@demo_app.command("drift")
def demo_drift(
    days: int = typer.Option(8, help="consecutive simulated days"),
    start: date = typer.Option("2026-01-01", parser=_date, metavar="YYYY-MM-DD", help="first logical date"),
    plot: str = typer.Option(None, help="PNG path (default: <data dir>/reports/closed_loop.png)"),
    verbose: bool = typer.Option(False, "--verbose", help="stream Airflow's output instead of capturing it"),
):
    """The closed loop: recsys_daily -> recsys_monitor -> recsys_retrain when it fires, day after day.

    Configure the drift with RECSYS_SIMULATOR__DRIFT (``make demo-drift`` sets it).
    """
    from recsys.demo import run_drift_demo

    raise typer.Exit(run_drift_demo(start, days, plot, verbose))


@app.command()
def backfill(
    from_: str = typer.Option(None, "--from", help="first day (default: the source's first)"),
    to: str = typer.Option(None, "--to", help="last day (default: the source's last)"),
):
    """Import a source's history day by day (land -> collect -> validate -> anonymize); resumable."""
    from recsys.backfill import backfill_range

    _echo(backfill_range(from_, to, _settings()))


@app.command()
def summary():
    """Summarize the recorded runs: rows per day, metrics, champion, a user's list."""
    from recsys.demo import print_summary

    print_summary(_settings())


@app.command("user-key")
def user_key_cmd(user_id: str):
    """The pseudonymous key of USER_ID (what the recommendations table is keyed by)."""
    from recsys.privacy.pseudonymize import user_key

    typer.echo(user_key(user_id, _settings()))


@app.command()
def recommend(user_id: str, n: int = 10):
    """USER_ID's live recommendations (the fallback list for unknown users)."""
    from recsys.serving import get_recommendations

    recs = get_recommendations(user_id, n, _settings())
    if recs.empty:
        raise RecsysError(
            "nothing is published yet: run the pipeline up to `recsys run publish --ds D` first"
        )
    typer.echo(recs.to_string(index=False))


@model_app.command("rollback")
def model_rollback():
    """Move the alias champion back to previous; the next publish uses it."""
    from recsys.registry import rollback

    _echo(rollback(_settings()))


@model_app.command("champion")
def model_champion():
    """Show the versions behind champion and previous."""
    from recsys.registry import champion_version

    s = _settings()
    _echo({"champion": champion_version(s), "previous": champion_version(s, "previous")})


@publish_app.command("rollback")
def publish_rollback():
    """Make the previous recommendations version live again."""
    import sqlalchemy as sa

    from recsys.serving.publish import engine_for, rollback

    engine = engine_for(_settings().resolved_db_url)
    if not sa.inspect(engine).has_table("recommendation_live"):
        raise RecsysError(f"nothing has been published to {engine.url!r} yet: nothing to roll back")
    _echo(rollback(engine))


@metrics_app.command("serve")
def metrics_serve(
    port: int = typer.Option(None, help="default: RECSYS_MONITORING__EXPORTER_PORT (8000)"),
    addr: str = typer.Option(None, help="default: 127.0.0.1"),
):
    """Expose the latest quality figures for Prometheus to scrape (re-read on every scrape)."""
    from recsys.catalog import Catalog
    from recsys.monitoring import serve_metrics

    s = _settings()
    server = serve_metrics(
        Catalog.from_settings(s).quality_snapshot,
        port=port or s.monitoring.exporter_port,
        addr=addr or s.monitoring.exporter_addr,
    )
    typer.echo(f"serving recsys metrics on http://{addr or s.monitoring.exporter_addr}:{server.port}/metrics")
    server.thread.join()


@alerts_app.command("relay")
def alerts_relay(
    port: int = typer.Option(None, help="default: RECSYS_RELAY__PORT (8081)"),
    host: str = typer.Option(None, help="default: RECSYS_RELAY__HOST (127.0.0.1)"),
):
    """Relay Alertmanager's retrain webhook to Airflow: POST /alertmanager/retrain triggers recsys_retrain.

    Airflow URL, user and password come from the settings' relay section: RECSYS_RELAY__AIRFLOW_URL,
    RECSYS_RELAY__USERNAME and RECSYS_RELAY__PASSWORD (or RECSYS_RELAY__PASSWORD_FILE); see
    recsys/monitoring/relay.py. Stops on SIGTERM or SIGINT.
    """
    import dataclasses

    from recsys.monitoring.relay import RelayConfig
    from recsys.monitoring.relay_app import run_relay

    try:
        config = RelayConfig.from_settings(_settings())
    except ValueError as exc:  # pydantic's ValidationError too
        raise typer.BadParameter(str(exc)) from None
    overrides = {k: v for k, v in {"port": port, "host": host}.items() if v is not None}
    config = dataclasses.replace(config, **overrides)
    run_relay(
        config,
        on_ready=lambda url: typer.echo(
            f"relaying Alertmanager webhooks on {url}/alertmanager/retrain to {config.dag_id}"
        ),
    )


def is_domain_error(exc: BaseException) -> bool:
    """A :class:`RecsysError`, or one of :data:`DOMAIN_ERRORS` (whose module is then already loaded)."""
    if isinstance(exc, RecsysError):
        return True
    for module, name in DOMAIN_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


def main() -> None:
    """The ``recsys`` entry point: a domain error is one line on stderr and exit status 1."""
    try:
        app()  # usage errors are handled (and exit 2) inside; everything else comes out here
    except Exception as exc:
        if not is_domain_error(exc):
            raise
        typer.echo(f"recsys: error: {exc}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
