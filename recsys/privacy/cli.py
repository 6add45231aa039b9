"""``recsys privacy ...``: key rotation, erasure requests, the read-only database role.

recsys privacy new-key                 print a fresh Fernet key (put it first in the key list)
recsys privacy rotate-key              re-encrypt every encrypted lake file under the newest key
recsys privacy erase --user ID         remove a user from every zone, table and model (audit: pseudonym only)
recsys privacy app-role                PostgreSQL: (re)create the read-only application role
"""

from __future__ import annotations

import json

import typer

app = typer.Typer(no_args_is_help=True, help="Privacy operations: key rotation, erasure, database access.")


def _settings():
    from recsys.config import load_settings

    return load_settings()


def _echo(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=1)


@app.command("new-key")
def new_key_cmd():
    """Print a fresh Fernet key (nothing is stored)."""
    from recsys.privacy.keys import new_key

    typer.echo(new_key())


@app.command("rotate-key")
def rotate_key(no_verify: bool = typer.Option(False, "--no-verify", help="skip the newest-key-only check")):
    """Re-encrypt landing *.enc, raw, quarantine under the newest of RECSYS_PRIVACY__ENCRYPTION_KEYS."""
    from recsys.privacy.crypto import DecryptionError, KeyConfigError
    from recsys.privacy.keys import rotate_keys

    try:
        _echo(rotate_keys(_settings(), verify=not no_verify))
    except (DecryptionError, KeyConfigError) as exc:
        _fail(exc)


@app.command()
def erase(user: list[str] = typer.Option(..., "--user", help="raw user id (repeat for several)")):
    """Erase users from every zone, every version of the recommendations table and every model."""
    from recsys.privacy.crypto import DecryptionError, KeyConfigError
    from recsys.privacy.erasure import erase_users
    from recsys.privacy.model_repair import ModelRepairError

    try:
        _echo(erase_users(user, _settings()))
    except (DecryptionError, KeyConfigError, ValueError, ModelRepairError) as exc:
        _fail(exc)


@app.command("app-role")
def app_role(
    role: str = typer.Option("recsys_app", help="role name"),
    password: str = typer.Option(
        None, envvar="RECSYS_APP_PASSWORD", show_default=False, help="the role's password (login role)"
    ),
):
    """PostgreSQL (RECSYS_DB_URL): the role applications use, SELECT on live_recommendations only."""
    from recsys.privacy.access import ensure_app_role
    from recsys.serving.publish import engine_for

    eng = engine_for(_settings().resolved_db_url)
    try:
        _echo(ensure_app_role(eng, role=role, password=password or None))
    finally:
        eng.dispose()
