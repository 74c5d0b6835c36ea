"""Job specs: YAML validated against a JSON Schema, with errors that name the line and field.

A spec has a name, a description, typed parameters with defaults, and phases (kind, config,
depends_on, retries, timeout). Without ``depends_on`` a phase depends on the one before it,
so the default DAG is a chain; ``depends_on: []`` makes a root.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import jsonschema
import yaml

from controlroom.limits import text_problem
from notifications.spec import NOTIFICATIONS_SCHEMA, notifications_errors
from runs.kinds import KINDS

PHASE_KINDS = tuple(KINDS)
PARAM_TYPES = ("string", "integer", "number", "boolean", "date")
RESERVED_PARAMETERS = ("datasets_dir", "run_id")
MAX_SPEC_BYTES = 256 * 1024
MAX_DEPTH = 32  # how deeply a spec's mappings and lists may nest
_NAME = r"^[a-z][a-z0-9_]{0,62}\Z"  # \Z: "$" would let a trailing newline through

SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "phases"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z][a-z0-9_-]{0,62}\Z"},
        "description": {"type": "string"},
        "parameters": {
            "type": "object",
            "propertyNames": {"pattern": _NAME},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type"],
                "properties": {
                    "type": {"enum": list(PARAM_TYPES)},
                    "default": {},
                    "description": {"type": "string"},
                },
            },
        },
        "phases": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "kind"],
                "properties": {
                    "name": {"type": "string", "pattern": _NAME},
                    "kind": {"enum": list(PHASE_KINDS)},
                    "config": {"type": "object"},
                    "depends_on": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                    "retries": {"type": "integer", "minimum": 0, "maximum": 10},
                    "timeout": {"type": "integer", "minimum": 1, "maximum": 86_400},
                },
            },
        },
        "notifications": NOTIFICATIONS_SCHEMA,
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(SPEC_SCHEMA)


class SpecError(ValueError):
    """A spec that cannot be accepted; ``errors`` lists one message per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    kind: str
    config: dict[str, Any]
    depends_on: tuple[str, ...]
    max_attempts: int
    timeout_s: int


def _field(path: list[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _line_for(node: yaml.Node | None, path: list[str | int]) -> int | None:
    """Walk the composed YAML node tree along ``path``; return the 1-based line found."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                return line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "enum" and error.path and error.path[-1] == "kind":
        return f"unknown phase kind {error.instance!r}; known kinds: {', '.join(PHASE_KINDS)}"
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field(s)")
    return error.message


def _located(root: yaml.Node | None, path: list[str | int], message: str) -> str:
    line = _line_for(root, path)
    where = f"line {line}, " if line else ""
    return f"{where}{_field(path)}: {message}"


INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what an engine's BIGINT holds


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def coerce_parameter(name: str, ptype: str, value: Any) -> Any:
    """Convert ``value`` to the declared type or raise ValueError with a clear reason."""
    if ptype == "string":
        if isinstance(value, (dict, list)):
            raise ValueError(f"parameter {name} must be a string")
        return str(value)
    if ptype == "boolean":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"parameter {name} must be true or false, not {value!r}")
    if ptype == "integer":
        if isinstance(value, bool) or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
            raise ValueError(f"parameter {name} must be an integer, not {value!r}")
        try:
            number = int(str(value).strip()) if not isinstance(value, float) else int(value)
        except ValueError:
            raise ValueError(f"parameter {name} must be an integer, not {_short(value)}") from None
        if not INT_MIN <= number <= INT_MAX:
            raise ValueError(f"parameter {name} must be an integer between {INT_MIN} and {INT_MAX}")
        return number
    if ptype == "number":
        if isinstance(value, bool):
            raise ValueError(f"parameter {name} must be a number, not {value!r}")
        if not isinstance(value, (int, float)):
            text = str(value).strip()
            try:
                value = int(text) if text.lstrip("+-").isdigit() and len(text) <= 400 else float(text)
            except (TypeError, ValueError):
                raise ValueError(f"parameter {name} must be a number, not {_short(value)}") from None
        if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
            value = float(value) if abs(value) < 10**308 else math.inf  # engines bind numbers as doubles
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"parameter {name} must be a finite number, not {_short(value)}")
        return value
    if ptype == "date":
        if isinstance(value, dt.date):
            return value.isoformat()
        try:
            return dt.date.fromisoformat(str(value).strip()).isoformat()
        except ValueError:
            raise ValueError(f"parameter {name} must be a date (YYYY-MM-DD), not {value!r}") from None
    raise ValueError(f"parameter {name} has unknown type {ptype!r}")


def _check_semantics(spec: dict[str, Any], root: yaml.Node | None) -> list[str]:
    from runs.executors import config_errors  # late: executors import settings-dependent code

    errors: list[str] = []
    for name, param in (spec.get("parameters") or {}).items():
        if name in RESERVED_PARAMETERS:
            errors.append(_located(root, ["parameters", name], f"{name!r} is reserved (it is set for every run)"))
        if "default" in param:
            try:
                coerce_parameter(name, param["type"], param["default"])
            except ValueError as exc:
                errors.append(_located(root, ["parameters", name, "default"], str(exc)))
    names = [p["name"] for p in spec["phases"]]
    seen: set[str] = set()
    for index, phase in enumerate(spec["phases"]):
        if phase["name"] in seen:
            errors.append(_located(root, ["phases", index, "name"], f"duplicate phase name {phase['name']!r}"))
        seen.add(phase["name"])
        for dep in phase.get("depends_on", []):
            if dep not in names:
                errors.append(_located(root, ["phases", index, "depends_on"], f"unknown phase {dep!r}"))
            elif dep == phase["name"]:
                errors.append(_located(root, ["phases", index, "depends_on"], "a phase cannot depend on itself"))
        for message in config_errors(phase["kind"], phase.get("config") or {}):
            errors.append(_located(root, ["phases", index, "config"], message))
    for path, message in notifications_errors(spec["notifications"]) if "notifications" in spec else []:
        errors.append(_located(root, ["notifications", *path], message))
    if not errors and _has_cycle(phases_of(spec)):
        errors.append(_located(root, ["phases"], "depends_on forms a cycle"))
    return errors


def _has_cycle(phases: list[PhaseSpec]) -> bool:
    deps = {p.name: set(p.depends_on) for p in phases}
    done: set[str] = set()
    while deps:
        ready = [name for name, d in deps.items() if d <= done]
        if not ready:
            return True
        for name in ready:
            done.add(name)
            del deps[name]
    return False


def _data_errors(value: Any, path: list[str | int], root: yaml.Node | None) -> list[str]:
    """What in the parsed YAML is not storable as JSON on every database: keys that are not text
    (YAML reads ``2024-01-01:`` as a date, ``~:`` as null), numbers that are not finite (``.nan``,
    ``.inf``), text with NUL or lone surrogates (``"\\0"``, ``"\\ud800"``)."""
    if isinstance(value, dict):
        errors = []
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append(_located(root, path, f"the key {json.dumps(key, default=str)} must be text (quote it)"))
            else:
                errors += _data_errors(item, [*path, key], root)
        return errors
    if isinstance(value, list):
        return [e for index, item in enumerate(value) for e in _data_errors(item, [*path, index], root)]
    if isinstance(value, float) and not math.isfinite(value):
        return [_located(root, path, f"{value} is not a finite number")]
    if isinstance(value, str) and (problem := text_problem(value)) is not None:
        return [_located(root, path, f"the text {problem}")]
    return []


def parse_spec(text: str) -> dict[str, Any]:
    """Parse and validate YAML spec text; return the spec as plain data or raise SpecError."""
    if not text or not text.strip():
        raise SpecError(["the spec is empty"])
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError([f"the spec is larger than {MAX_SPEC_BYTES // 1024} KiB"])
    try:
        # Aliases could expand a few hundred bytes into gigabytes ("billion laughs"): refuse them.
        # Deep nesting would exhaust the recursion of YAML's composer: refuse it before composing.
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1
                raise SpecError([f"line {line}: YAML aliases (*name) are not allowed in job specs"])
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise SpecError([f"line {event.start_mark.line + 1}: the spec nests deeper than {MAX_DEPTH} "
                                     "levels"])
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"{where}invalid YAML: {problem}"]) from None
    if not isinstance(spec, dict):
        raise SpecError(["line 1: the spec must be a mapping with name and phases"])
    errors = _data_errors(spec, [], root)
    if errors:
        raise SpecError(errors)
    errors = [
        _located(root, list(e.absolute_path), _message(e))
        for e in sorted(_VALIDATOR.iter_errors(spec), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if errors:
        raise SpecError(errors)
    errors = _check_semantics(spec, root)
    if errors:
        raise SpecError(errors)
    return json.loads(json.dumps(spec, default=str))


def spec_hash(spec: dict[str, Any]) -> str:
    """sha256 of the canonical JSON form: formatting and key order do not change it."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def phases_of(spec: dict[str, Any]) -> list[PhaseSpec]:
    result: list[PhaseSpec] = []
    previous: str | None = None
    for phase in spec["phases"]:
        if "depends_on" in phase:
            deps = tuple(phase["depends_on"])
        else:
            deps = (previous,) if previous else ()
        result.append(
            PhaseSpec(
                name=phase["name"], kind=phase["kind"], config=phase.get("config") or {},
                depends_on=deps, max_attempts=1 + int(phase.get("retries", 0)),
                timeout_s=int(phase.get("timeout", 3600)),
            )
        )
        previous = phase["name"]
    return result


def resolve_parameters(spec: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
    """Apply defaults and types to run parameters; unknown or missing ones are errors."""
    declared = spec.get("parameters") or {}
    given = dict(given or {})
    errors: list[str] = []
    unknown = sorted(set(given) - set(declared))
    if unknown:
        errors.append(f"unknown parameter(s): {', '.join(unknown)}")
    resolved: dict[str, Any] = {}
    for name, param in declared.items():
        if name in given and given[name] not in (None, ""):
            raw = given[name]
        elif "default" in param:
            raw = param["default"]
        else:
            errors.append(f"parameter {name} is required")
            continue
        try:
            resolved[name] = coerce_parameter(name, param["type"], raw)
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        raise SpecError(errors)
    return resolved


def typed_parameters(spec: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """A run's stored parameters with their declared types restored for binding: JSON storage may
    hand a large float back as an integer (PostgreSQL's jsonb writes 1e40 as 1 and 40 zeros),
    which an engine cannot bind; a value that no longer coerces is passed on as stored."""
    declared = spec.get("parameters") or {}
    typed = dict(stored)
    for name, value in stored.items():
        if name in declared:
            try:
                typed[name] = coerce_parameter(name, declared[name]["type"], value)
            except ValueError:
                pass
    return typed
