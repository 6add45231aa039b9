"""MLflow plumbing: where runs and the registry live, set once at the entry point of a stage.

The defaults are embedded (SQLite + a local artifact folder under ``data_dir``); a tracking server URL in
``RECSYS_MLFLOW_TRACKING_URI`` is the production form.
"""

from __future__ import annotations

import os

from recsys.config import Settings

# What a logged model needs at load time; listing it avoids MLflow re-importing TensorFlow to infer it.
PIP_REQUIREMENTS_PACKAGES = ("keras", "mlflow", "pandas", "numpy", "pyarrow")
# tensorflow-cpu has wheels for x86_64 only; elsewhere the tensorflow wheels are the CPU build
TENSORFLOW_MARKERS = (
    ("tensorflow-cpu", "platform_machine == 'x86_64'"),
    ("tensorflow", "platform_machine != 'x86_64'"),
)


def configure(settings: Settings) -> str:
    """Point MLflow at the configured store and return the experiment id (created if needed)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    import mlflow
    from mlflow.exceptions import MlflowException

    if settings.resolved_tracking_uri.startswith("sqlite:///"):
        (settings.data_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    mlflow.set_registry_uri(settings.resolved_tracking_uri)
    exp = mlflow.get_experiment_by_name(settings.experiment)
    if exp is not None:
        return exp.experiment_id
    # A tracking server stores artifacts where it was told to (its --artifacts-destination), shared by
    # every worker; only the embedded store needs a local artifact folder.
    remote = settings.resolved_tracking_uri.startswith(("http://", "https://"))
    location = settings.mlflow_artifact_root if remote else settings.resolved_artifact_root
    try:
        return mlflow.create_experiment(settings.experiment, artifact_location=location)
    except MlflowException as exc:  # another task created it a moment ago
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc).lower():
            raise
        return mlflow.get_experiment_by_name(settings.experiment).experiment_id


def pip_requirements() -> list[str]:
    """Pinned requirements for logged models, read from the installed versions; TensorFlow as
    ``tensorflow-cpu`` on x86_64 and ``tensorflow`` elsewhere (environment markers)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in PIP_REQUIREMENTS_PACKAGES:
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    tf = None
    for pkg, _ in TENSORFLOW_MARKERS:  # whichever is installed here: both builds share version numbers
        try:
            tf = tf or version(pkg)
        except PackageNotFoundError:
            continue
    if tf is not None:
        out += [f"{pkg}=={tf}; {marker}" for pkg, marker in TENSORFLOW_MARKERS]
    return out
