"""``recsys privacy ...``: key rotation and erasure requests."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Privacy operations: key rotation, erasure.")
