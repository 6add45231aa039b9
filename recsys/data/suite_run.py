"""The one place that talks to Great Expectations: run a suite of :class:`~recsys.data.expectations.Spec`
records on a frame and reduce GX's result to :class:`Check` verdicts (:class:`SuiteRun`).

GX is imported lazily, inside :func:`run_suite` (the import alone takes seconds, and Airflow parses DAG
files that import ``recsys``). :mod:`recsys.data.expectations` declares the suites and re-exports these.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from recsys.data.expectations import Spec

log = logging.getLogger(__name__)
_RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "partial_unexpected_count": 20,
    "return_unexpected_index_query": False,
}


@dataclass(frozen=True)
class Check:
    """GX's verdict on one expectation."""

    expectation: str  # snake-case GX type, e.g. expect_column_values_to_not_be_null
    rule: str
    level: str
    column: str | None
    success: bool
    unexpected_rows: tuple[int, ...] = ()  # positions in the validated frame (it has a RangeIndex)
    unexpected_count: int | None = None
    observed_value: Any = None
    sample: tuple = ()  # a few unexpected values (identifiers are masked before GX sees them)
    error: str | None = None  # GX could not evaluate the expectation

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly record for the validation report."""
        out: dict[str, Any] = {"expectation": self.expectation, "rule": self.rule, "success": self.success}
        if self.column is not None:
            out["column"] = self.column
        if self.unexpected_count is not None:
            out["unexpected_count"] = self.unexpected_count
        if self.observed_value is not None:
            out["observed_value"] = _jsonable(self.observed_value)
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class SuiteRun:
    """One GX run of a suite: the overall verdict, one :class:`Check` per expectation, the Data Docs."""

    suite: str
    success: bool
    checks: tuple[Check, ...]
    data_docs_path: Path | None = None
    by_rule: dict[str, Check] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_rule", {c.rule: c for c in self.checks})


# Running --------------------------------------------------------------------------------------------
_DEFER_DOCS: contextvars.ContextVar[bool] = contextvars.ContextVar("recsys_defer_data_docs", default=False)


def _docs_index(root: Path) -> Path:
    return Path(root) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


@contextlib.contextmanager
def deferred_data_docs(reports_dir: Path) -> Iterator[None]:
    """Within the block, suite runs store their results in ``reports_dir``'s project but do not rebuild
    its Data Docs; the site is built once on the way out (also when the block fails). A rebuild renders
    every stored run, so rebuilding after each of a backfill's days costs time growing with the days
    already imported: measured 0.8 s a suite at the start of a backfill, three suites a day."""
    token = _DEFER_DOCS.set(True)
    try:
        yield
    except BaseException:
        _DEFER_DOCS.reset(token)
        try:  # the runs before the failure still get their pages; the block's error is the one raised
            build_data_docs(reports_dir)
        except Exception:
            log.exception("could not build the Data Docs of %s after a failure", reports_dir)
        raise
    _DEFER_DOCS.reset(token)
    build_data_docs(reports_dir)


def build_data_docs(reports_dir: Path) -> Path | None:
    """Build ``reports_dir``'s Data Docs site from the runs stored there; its index, or None (no project)."""
    reports_dir = Path(reports_dir)
    if not (reports_dir / "gx").is_dir():
        return None
    context = _gx().get_context(mode="file", project_root_dir=reports_dir)
    context.build_data_docs()
    return _docs_index(reports_dir)


def _gx():
    """Import GX with analytics off (GX 1.x reads GX_ANALYTICS_ENABLED; nothing is written to $HOME)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def run_suite(
    frame: pd.DataFrame, suite_name: str, specs: list[Spec], *, run_name: str, reports_dir: Path | None = None
) -> SuiteRun:
    """Validate ``frame`` against ``specs`` with GX and return its verdicts.

    One context per call: an ephemeral one, or a file context rooted at ``reports_dir`` whose Data Docs
    the Checkpoint updates (``reports_dir/gx/uncommitted/data_docs/local_site/index.html``).
    """
    gx = _gx()
    import great_expectations.expectations as gxe
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if reports_dir is None:
        context = gx.get_context(mode="ephemeral")
    else:
        reports_dir = Path(reports_dir)
        reports_dir.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=reports_dir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)

    # A rerun in the same reports_dir replaces the definitions (add_or_update is quadratic in the suite).
    for factory in (context.checkpoints, context.validation_definitions, context.suites):
        if suite_name in {x.name for x in factory.all()}:
            factory.delete(name=suite_name)
    source = context.data_sources.add_or_update_pandas(name=suite_name)
    batch_definition = source.add_dataframe_asset(name=suite_name).add_batch_definition_whole_dataframe(
        name="whole_frame"
    )
    expectations = [
        getattr(gxe, s.expectation)(
            **s.kwargs,
            meta={"rule": s.rule, "level": s.level},
            **({"description": s.description} if s.description else {}),
        )
        for s in specs
    ]
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
    )
    defer = _DEFER_DOCS.get()
    build_docs = reports_dir is not None and not defer
    actions = [UpdateDataDocsAction(name="update_data_docs")] if build_docs else []
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=suite_name,
            validation_definitions=[definition],
            actions=actions,
            result_format=_RESULT_FORMAT,
        )
    )

    frame = frame.reset_index(drop=True)
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))
    (validation,) = result.run_results.values()
    order = {s.rule: i for i, s in enumerate(specs)}  # GX groups results its own way; keep the suite's
    checks = tuple(
        sorted((_check(r) for r in validation.results), key=lambda c: order.get(c.rule, len(order)))
    )
    docs = None
    if reports_dir is not None:
        docs = Path(context.root_directory) / "uncommitted" / "data_docs" / "local_site" / "index.html"
        if build_docs and not docs.exists():
            raise RuntimeError(f"GX did not build Data Docs at {docs}")
    return SuiteRun(suite_name, bool(validation.success), checks, docs)


def _check(r) -> Check:
    config = r.expectation_config
    meta = config.meta or {}
    res = r.result or {}
    info = r.exception_info or {}
    # exception_info is either one record or a dict of records keyed by metric.
    records = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    errors = [str(x.get("exception_message")) for x in records if x.get("raised_exception")]
    return Check(
        expectation=config.type,
        rule=meta.get("rule", config.type),
        level=meta.get("level", "row"),
        column=config.kwargs.get("column") or config.kwargs.get("column_B"),
        success=bool(r.success),
        unexpected_rows=tuple(int(i) for i in res.get("unexpected_index_list") or ()),
        unexpected_count=res.get("unexpected_count"),
        observed_value=res.get("observed_value"),
        sample=tuple(res.get("partial_unexpected_list") or ())[:5],
        error="; ".join(errors) or None,
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return str(v)


# Chunks ---------------------------------------------------------------------------------------------
_SUMMED = ("element_count", "missing_count", "unexpected_count")
_PARTIAL = 20


class ChunkedSuite:
    """One suite run over a day given in chunks: GX evaluates each chunk, the verdicts are summed.

    The context, suite and batch definition are built once; each :meth:`run` validates one chunk and
    returns its checks (with the chunk's unexpected row positions, for the quarantine); :meth:`finish`
    returns the day's :class:`SuiteRun`: per expectation the summed element, missing and unexpected
    counts, the first unexpected values, a table row count summed and judged against its bounds again.
    With ``reports_dir`` the summed result is stored in that GX project (one validation result for the
    day, as a whole-day checkpoint run stores) and its Data Docs updated.
    """

    def __init__(self, suite_name: str, specs: list[Spec], *, run_name: str, reports_dir: Path | None = None):
        gx = _gx()
        import great_expectations.expectations as gxe
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.specs, self.run_name, self.reports_dir = specs, run_name, reports_dir
        if reports_dir is None:
            context = gx.get_context(mode="ephemeral")
        else:
            reports_dir = Path(reports_dir)
            reports_dir.mkdir(parents=True, exist_ok=True)
            context = gx.get_context(mode="file", project_root_dir=reports_dir)
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        for factory in (context.checkpoints, context.validation_definitions, context.suites):
            if suite_name in {x.name for x in factory.all()}:
                factory.delete(name=suite_name)
        source = context.data_sources.add_or_update_pandas(name=suite_name)
        self._batch_definition = source.add_dataframe_asset(
            name=suite_name
        ).add_batch_definition_whole_dataframe(name="whole_frame")
        expectations = [
            getattr(gxe, s.expectation)(
                **s.kwargs,
                meta={"rule": s.rule, "level": s.level},
                **({"description": s.description} if s.description else {}),
            )
            for s in specs
        ]
        self._suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
        self.context, self.suite_name = context, suite_name
        self._merged = None  # the first chunk's GX result, its numbers replaced by the sums
        self._sums: list[dict] = []
        self._batch_id = None

    def run(self, frame: pd.DataFrame) -> SuiteRun:
        """Validate one chunk; its checks (row positions in ``frame``, which gets a RangeIndex)."""
        from great_expectations.validator.v1_validator import Validator

        frame = frame.reset_index(drop=True)
        validator = Validator(self._batch_definition, _RESULT_FORMAT, {"dataframe": frame})
        result = validator.validate_expectation_suite(self._suite)
        self._batch_id = self._batch_id or validator.active_batch_id
        self._add(result)
        return SuiteRun(self.suite_name, bool(result.success), self._checks(result.results))

    def _checks(self, results) -> tuple[Check, ...]:
        order = {s.rule: i for i, s in enumerate(self.specs)}
        return tuple(sorted((_check(r) for r in results), key=lambda c: order.get(c.rule, len(order))))

    def _add(self, result) -> None:
        if self._merged is None:
            self._merged = result
            self._sums = [dict(r.result or {}) for r in result.results]
            for s in self._sums:
                s.pop("unexpected_index_list", None)  # positions in a chunk mean nothing for the day
                s.pop("unexpected_list", None)  # every bad value of the day: not kept in memory
            return
        for total, r in zip(self._sums, result.results, strict=True):
            res = r.result or {}
            for key in _SUMMED:
                if key in total and res.get(key) is not None:
                    total[key] += res[key]
            if "partial_unexpected_list" in total:
                room = _PARTIAL - len(total["partial_unexpected_list"])
                total["partial_unexpected_list"] = [
                    *total["partial_unexpected_list"],
                    *(res.get("partial_unexpected_list") or [])[: max(room, 0)],
                ]
            if r.expectation_config.type == "expect_table_row_count_to_be_between":
                total["observed_value"] = total.get("observed_value", 0) + res.get("observed_value", 0)
        for mine, r in zip(self._merged.results, result.results, strict=True):
            if r.exception_info and not mine.exception_info:
                mine.exception_info = r.exception_info
            mine.success = bool(mine.success and r.success)

    def finish(self) -> SuiteRun:
        """The day's verdicts (sums over the chunks); the Data Docs updated when ``reports_dir`` is set."""
        if self._merged is None:
            raise ValueError("no chunk was validated")
        merged = self._merged
        for r, total in zip(merged.results, self._sums, strict=True):
            _percentages(total)
            if r.expectation_config.type == "expect_table_row_count_to_be_between":
                kw = r.expectation_config.kwargs
                lo, hi, seen = kw.get("min_value"), kw.get("max_value"), total.get("observed_value", 0)
                r.success = (lo is None or seen >= lo) and (hi is None or seen <= hi)
            elif "unexpected_count" in total and not r.exception_info:
                r.success = total["unexpected_count"] == 0
            r.result = total
        ok = [bool(r.success) for r in merged.results]
        merged.success = all(ok)
        merged.statistics.update(
            evaluated_expectations=len(ok),
            successful_expectations=sum(ok),
            unsuccessful_expectations=len(ok) - sum(ok),
            success_percent=100.0 * sum(ok) / len(ok) if ok else None,
        )
        docs = self._record(merged) if self.reports_dir is not None else None
        return SuiteRun(self.suite_name, bool(merged.success), self._checks(merged.results), docs)

    def _record(self, merged) -> Path:
        """Store the day's result in the project (as a checkpoint run does) and update its Data Docs."""
        import datetime

        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        run_id = RunIdentifier(run_name=self.run_name, run_time=datetime.datetime.now(datetime.UTC))
        merged.meta.update(run_id=run_id, validation_time=run_id.run_time, batch_parameters=None)
        suite_id = ExpectationSuiteIdentifier(name=self.suite_name)
        result_id = ValidationResultIdentifier(
            batch_identifier=self._batch_id, expectation_suite_identifier=suite_id, run_id=run_id
        )
        self.context.validation_results_store.store_validation_results(
            suite_validation_result=merged,
            suite_validation_result_identifier=result_id,
            expectation_suite_identifier=suite_id,
        )
        docs = _docs_index(self.reports_dir)
        if not _DEFER_DOCS.get():
            self.context.build_data_docs(resource_identifiers=[result_id, suite_id], build_index=True)
            if not docs.exists():
                raise RuntimeError(f"GX did not build Data Docs at {docs}")
        return docs


def _percentages(total: dict) -> None:
    n, missing, bad = total.get("element_count"), total.get("missing_count"), total.get("unexpected_count")
    if n is None or bad is None:
        return
    present = n - (missing or 0)
    if "missing_percent" in total:
        total["missing_percent"] = 100.0 * (missing or 0) / n if n else None
    if "unexpected_percent_total" in total:
        total["unexpected_percent_total"] = 100.0 * bad / n if n else None
    for key in ("unexpected_percent", "unexpected_percent_nonmissing"):
        if key in total:
            total[key] = 100.0 * bad / present if present else None
    total.pop("partial_unexpected_counts", None)
    total.pop("partial_unexpected_index_list", None)
