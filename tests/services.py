"""The test policy for required services and binaries: skip on a laptop, FAIL under ``CI=true``.

Why: a test that skips when PostgreSQL, Redis, prometheus/pushgateway/alertmanager, docker-compose or
the shared KuaiRand files are missing lets a CI machine without them go green having tested none of it.
Under ``CI=true`` (what CI sets; ``.ci/run`` provides every service) a missing requirement is a failure
that names it. Every such test goes through this module:

* ``@requires(available, "what is missing and how to get it")`` on a test (a marker checked at setup);
* ``service_missing("...")`` inside a test or fixture, when the check needs to run first.

``tests/conftest.py`` installs the hooks (:func:`pytest_configure`, :func:`pytest_runtest_setup`).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

MARKER = "requires"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def service_missing(reason: str) -> NoReturn:
    """A required service, binary or data set is missing: skip locally, fail loudly under CI=true."""
    if in_ci():
        pytest.fail(f"CI=true and a required service is missing (not skipped): {reason}", pytrace=False)
    pytest.skip(reason)


def requires(available: bool, reason: str) -> pytest.MarkDecorator:
    """Mark a test (or module, via ``pytestmark``) as needing something; see :func:`service_missing`."""
    return getattr(pytest.mark, MARKER)(bool(available), reason)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(available, reason): a required service or binary")


def pytest_runtest_setup(item) -> None:
    for mark in item.iter_markers(name=MARKER):
        available, reason = mark.args
        if not available:
            service_missing(reason)
