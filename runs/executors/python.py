"""`python` phases: call a registered callable (see runs.callables) with config args.

config: callable (a registered name), args (a mapping passed as keyword arguments)."""

from __future__ import annotations

from typing import Any

from runs.callables import callable_get, callable_names
from runs.executors.context import PhaseContext, PhaseFailure

_FIELDS = {"callable", "args", "mlflow"}  # mlflow: a connection whose MLflow run the phase logs to


def config_errors(config: dict[str, Any]) -> list[str]:
    errors = [f"unknown python config field {key!r}" for key in sorted(set(config) - _FIELDS)]
    name = config.get("callable")
    if not isinstance(name, str) or not name:
        errors.append("python phases need a 'callable' name")
    elif callable_get(name) is None:
        errors.append(f"no registered callable {name!r}; registered: {', '.join(callable_names())}")
    if not isinstance(config.get("args", {}), dict):
        errors.append("'args' must be a mapping")
    if "mlflow" in config and not (isinstance(config["mlflow"], str) and config["mlflow"]):
        errors.append("'mlflow' must name an MLflow connection")
    return errors


def execute(ctx: PhaseContext) -> dict[str, Any]:
    fn = callable_get(ctx.phase.config["callable"])
    if fn is None:
        raise PhaseFailure(f"The callable {ctx.phase.config['callable']!r} is no longer registered.")
    from runs.mlflow import mlflow_for_phase

    try:
        with mlflow_for_phase(ctx) as ctx.mlflow:  # None unless the config names an MLflow connection
            return fn(ctx, **ctx.phase.config.get("args", {})) or {}
    except PhaseFailure:
        raise
    except TypeError as exc:
        raise PhaseFailure(f"Bad arguments for {ctx.phase.config['callable']}: {exc}") from exc
