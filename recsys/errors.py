"""Domain errors, and which failures are permanent.

A :class:`RecsysError` is a *domain* error: bad input, a missing prerequisite, a busy stage. Its message
says what is wrong and what to do, so the ``recsys`` command prints it as one line and exits non-zero
(``recsys.cli.main``); anything else is a bug and keeps its traceback.

A *permanent* failure is one where retrying the same task on the same inputs would fail the same way.

The orchestrator uses this to fail such a task at once (Airflow's ``AirflowFailException``) instead of
spending its retries and backoff on it, and the CLI to print them as one line instead of a traceback. The
error classes stay in the modules that raise them; this module names them without importing those modules
(and so pandas, Great Expectations or TensorFlow) until an exception has to be classified.
"""

from __future__ import annotations

import importlib


class RecsysError(Exception):
    """A domain error whose message is meant for the operator (printed without a traceback)."""


# module -> class names. A data-quality failure of a batch, a frame that breaks its schema, a column with
# no privacy policy, a publish whose checks failed, missing or wrong keys: none of these heal on retry.
PERMANENT = {
    "recsys.data.validate": ("BatchValidationError",),
    "recsys.data.schema": ("SchemaError",),
    "recsys.data.sources": ("LandingError",),  # a symlink, a FIFO, a landing file that is not data
    "recsys.privacy.anonymize": ("PolicyError",),
    "recsys.privacy.crypto": ("KeyConfigError", "DecryptionError"),
    "recsys.serving.publish": ("PublishCheckError",),
}


def permanent_error_types() -> tuple[type[BaseException], ...]:
    """The permanent error classes (imports their modules: call it only when classifying a failure)."""
    types: list[type[BaseException]] = []
    for module, names in PERMANENT.items():
        mod = importlib.import_module(module)
        types.extend(getattr(mod, name) for name in names)
    return tuple(types)


def is_permanent(exc: BaseException) -> bool:
    """True when ``exc`` (or the exception it was raised from) is one of the permanent failures."""
    types = permanent_error_types()
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, types):
            return True
        seen.add(id(exc))
        exc = exc.__cause__
    return False
