"""The one error type an operator sees as a message rather than a traceback.

A :class:`RecsysError` is a *domain* error: bad input, a missing prerequisite, a busy stage. Its message
says what is wrong and what to do, so the ``recsys`` command prints it as one line and exits non-zero
(``recsys.cli.main``); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RecsysError(Exception):
    """A domain error whose message is meant for the operator (printed without a traceback)."""
