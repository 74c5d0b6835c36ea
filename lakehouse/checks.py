"""Data-quality checks, evaluated by DuckDB over one relation named ``checked``.

A check is a dict: ``name``, ``type``, ``severity`` (``warn`` or ``fail``, default ``fail``) and
the fields of its type:

- ``not_null``: ``columns`` (or ``column``): no row has a null in any of them;
- ``unique``: ``columns`` (or ``column``): no two rows share the key (rows with a null key part
  are not compared, as in SQL);
- ``accepted_values``: ``column``, ``values``: every non-null value is one of them;
- ``range``: ``column``, ``min`` and/or ``max`` (inclusive; nulls pass);
- ``row_count``: ``min`` and/or ``max``: the relation's row count lies between them;
- ``freshness``: ``column`` (a timestamp or date), ``max_age`` (``90s``, ``30m``, ``2h``, ``7d``,
  ``1w``): the newest value is at most that old (a timestamp without a zone is read as UTC);
- ``sql``: ``predicate``, one SQL boolean expression that must hold for every row (null counts
  as not holding).

Identifiers are quoted, values are bound as parameters and cast to the column's own type; only
a ``sql`` check's predicate is SQL text, and it must be one expression (no ``;``). Rows that fail
a row-level check are kept, up to ``cap`` per check, with the check's name in a first column.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot.tokens import TokenType

CHECK_TYPES = ("not_null", "unique", "accepted_values", "range", "row_count", "freshness", "sql")
SEVERITIES = ("warn", "fail")
FAILING_ROWS_CAP = 100
_COMMON = {"name", "type", "severity"}
_FIELDS = {
    "not_null": {"columns", "column"}, "unique": {"columns", "column"}, "accepted_values": {"column", "values"},
    "range": {"column", "min", "max"}, "row_count": {"min", "max"}, "freshness": {"column", "max_age"},
    "sql": {"predicate"},
}
_NAME = re.compile(r"[\w .:-]{1,64}")
_AGE = re.compile(r"\s*(\d+)\s*(s|m|h|d|w)\s*")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SCALAR = (str, int, float)


class CheckError(Exception):
    """A check cannot be evaluated as written (a missing column, a value of the wrong type)."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    type: str
    severity: str
    status: str  # pass, warn or fail
    failing: int  # failing rows; 1 for a table-level check that does not hold
    observed: Any = None  # a table-level check's measure (row count, newest value)
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_max_age(text: Any) -> dt.timedelta:
    """``"2h"`` as a timedelta; ValueError for anything else."""
    match = _AGE.fullmatch(text) if isinstance(text, str) else None
    if not match or int(match[1]) <= 0:
        raise ValueError(f"max_age must be a positive number with a unit s, m, h, d or w (like '2h'), not {text!r}")
    return dt.timedelta(**{_AGE_UNITS[match[2]]: int(match[1])})


def _one_expression(predicate: str) -> bool:
    try:
        tokens = sqlglot.tokenize(predicate, read="duckdb")
    except sqlglot.errors.TokenError:
        return False
    return bool(tokens) and not any(t.token_type == TokenType.SEMICOLON for t in tokens)


def _columns_of(check: dict[str, Any]) -> list[str]:
    columns = check.get("columns", [check["column"]] if "column" in check else [])
    return columns if isinstance(columns, list) else [columns]


def _bound(value: Any) -> bool:
    return isinstance(value, _SCALAR) and not isinstance(value, bool)


def checks_config_errors(checks: Any) -> list[str]:
    """What is wrong with a list of checks, one message per problem."""
    if not isinstance(checks, list) or not checks:
        return ["'checks' must be a non-empty list of checks"]
    errors: list[str] = []
    seen: set[str] = set()
    for index, check in enumerate(checks, 1):
        if not isinstance(check, dict):
            errors.append(f"check {index} must be a mapping")
            continue
        name = check.get("name")
        label = f"check {name!r}" if isinstance(name, str) else f"check {index}"
        if not (isinstance(name, str) and _NAME.fullmatch(name)):
            errors.append(f"{label} needs a 'name' (letters, digits, spaces, . : - _; at most 64)")
        elif name in seen:
            errors.append(f"{label} is named twice")
        else:
            seen.add(name)
        kind = check.get("type")
        if kind not in CHECK_TYPES:
            errors.append(f"{label}: 'type' must be one of {', '.join(CHECK_TYPES)}")
            continue
        errors += [f"{label}: unknown field {key!r}" for key in sorted(set(check) - _COMMON - _FIELDS[kind])]
        if check.get("severity", "fail") not in SEVERITIES:
            errors.append(f"{label}: 'severity' must be warn or fail")
        errors += [f"{label}: {e}" for e in _type_errors(kind, check)]
    return errors


def _type_errors(kind: str, check: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    if kind in ("not_null", "unique"):
        columns = _columns_of(check)
        if "columns" in check and "column" in check:
            errors.append("give 'columns' or 'column', not both")
        if not columns or not all(isinstance(c, str) and c for c in columns):
            errors.append("'columns' must list one or more column names")
    if kind in ("accepted_values", "range", "freshness") and not (
            isinstance(check.get("column"), str) and check["column"]):
        errors.append("'column' must name one column")
    if kind == "accepted_values":
        values = check.get("values")
        if not (isinstance(values, list) and values and all(isinstance(v, _SCALAR) for v in values)):
            errors.append("'values' must be a non-empty list of strings, numbers or booleans")
    if kind in ("range", "row_count"):
        if "min" not in check and "max" not in check:
            errors.append("give 'min', 'max' or both")
        for key in ("min", "max"):
            if key in check and not (_bound(check[key]) if kind == "range"
                                     else isinstance(check[key], int) and not isinstance(check[key], bool)
                                     and check[key] >= 0):
                errors.append(f"'{key}' must be {'a number or a string' if kind == 'range' else 'a count'}")
    if kind == "freshness":
        try:
            parse_max_age(check.get("max_age"))
        except ValueError as exc:
            errors.append(str(exc))
    if kind == "sql":
        predicate = check.get("predicate")
        if not (isinstance(predicate, str) and predicate.strip() and _one_expression(predicate)):
            errors.append("'predicate' must be one SQL boolean expression (no ';')")
    return errors


def quote(name: str) -> str:
    """A DuckDB identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class _Evaluator:
    def __init__(self, con: Any, *, relation: str, now: dt.datetime, cap: int) -> None:
        self.con, self.relation, self.now, self.cap = con, quote(relation), now, cap
        self.types = {row[0]: row[1] for row in con.execute(f"DESCRIBE {self.relation}").fetchall()}
        label = "failed_check"
        while label in self.types:
            label = "_" + label
        self.label = label
        self.failing_rows: list[pa.Table] = []

    def column(self, check: dict[str, Any], name: str) -> str:
        if name not in self.types:
            raise CheckError(f"Check '{check['name']}' names the column '{name}', which the table does not have.")
        return quote(name)

    def row_level(self, check: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The relation of ``check``'s failing rows, with its parameters."""
        kind, source = check["type"], self.relation
        params: dict[str, Any] = {}
        if kind == "not_null":
            bad = " OR ".join(f"{self.column(check, c)} IS NULL" for c in _columns_of(check))
        elif kind == "unique":
            keys = [self.column(check, c) for c in _columns_of(check)]
            dup = quote("__controlroom_dup")
            source = (f"(SELECT *, count(*) OVER (PARTITION BY {', '.join(keys)}) AS {dup} FROM {self.relation} "
                      f"WHERE {' AND '.join(f'{k} IS NOT NULL' for k in keys)})")
            return f"SELECT * EXCLUDE ({dup}) FROM {source} WHERE {dup} > 1", params
        elif kind == "accepted_values":
            column = self.column(check, check["column"])
            params["values"] = [_text(v) for v in check["values"]]
            bad = (f"{column} IS NOT NULL AND {column} NOT IN "
                   f"(SELECT unnest(CAST($values AS {self.types[check['column']]}[])))")
        elif kind == "range":
            column, parts = self.column(check, check["column"]), []
            for key, op in (("min", "<"), ("max", ">")):
                if key in check:
                    params[key] = _text(check[key])
                    parts.append(f"{column} {op} CAST(${key} AS {self.types[check['column']]})")
            bad = " OR ".join(parts)
        else:  # sql
            bad = f"NOT coalesce(({check['predicate']}), false)"
        return f"SELECT * FROM {source} WHERE {bad}", params

    def evaluate(self, check: dict[str, Any]) -> CheckResult:
        kind, name = check["type"], check["name"]
        severity = check.get("severity", "fail")
        observed, message = None, ""
        if kind == "row_count":
            observed = self.con.execute(f"SELECT count(*) FROM {self.relation}").fetchall()[0][0]
            failing = int(observed < check.get("min", 0) or ("max" in check and observed > check["max"]))
            if failing:
                message = f"{observed} rows, expected {check.get('min', 0)} to {check.get('max', 'any number')}"
        elif kind == "freshness":
            observed, failing, message = self.freshness(check)
        else:
            query, params = self.row_level(check)
            failing = self.con.execute(f"SELECT count(*) FROM ({query})", params).fetchall()[0][0]
            if failing:
                message = f"{failing} failing row(s)"
                rows = self.con.sql(f"SELECT $check AS {quote(self.label)}, * FROM ({query}) LIMIT {int(self.cap)}",
                                    params={**params, "check": name}).to_arrow_table()
                self.failing_rows.append(rows)
        status = "pass" if not failing else severity
        return CheckResult(name=name, type=kind, severity=severity, status=status, failing=failing,
                           observed=observed, message=message)

    def freshness(self, check: dict[str, Any]) -> tuple[Any, int, str]:
        column = self.column(check, check["column"])
        kind = self.types[check["column"]].upper()
        if not (kind.startswith("TIMESTAMP") or kind == "DATE"):
            raise CheckError(f"Check '{check['name']}' needs a timestamp or date column; "
                             f"'{check['column']}' is {kind}.")
        newest = self.con.execute(f"SELECT max({column}) FROM {self.relation}").fetchall()[0][0]
        if newest is None:
            return None, 1, "no value at all"
        if not isinstance(newest, dt.datetime):
            newest = dt.datetime(newest.year, newest.month, newest.day)
        if newest.tzinfo is None:
            newest = newest.replace(tzinfo=dt.UTC)
        age = self.now - newest
        max_age = parse_max_age(check["max_age"])
        failing = int(age > max_age)
        message = f"newest value is {_duration(age)} old, more than {check['max_age']}" if failing else ""
        return newest.isoformat(), failing, message


def _duration(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds}s"


def evaluate_checks(con: Any, checks: list[dict[str, Any]], *, relation: str = "checked",
                    now: dt.datetime | None = None,
                    cap: int = FAILING_ROWS_CAP) -> tuple[list[CheckResult], pa.Table | None]:
    """Run every check on ``relation`` in the DuckDB connection ``con``: their results, in order,
    and the failing rows (at most ``cap`` per check, the check's name first), or None when no row
    failed. Raises CheckError when a check cannot run as written."""
    evaluator = _Evaluator(con, relation=relation, now=now or dt.datetime.now(dt.UTC), cap=cap)
    results = [evaluator.evaluate(check) for check in checks]
    rows = pa.concat_tables(evaluator.failing_rows, promote_options="permissive") if evaluator.failing_rows else None
    return results, rows
