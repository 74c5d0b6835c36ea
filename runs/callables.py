"""The registry of Python callables that `python` phases may run.

Only functions decorated with @phase_callable in the modules listed by the
PHASE_CALLABLE_MODULES setting can run: never code typed into a web form."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from django.conf import settings

PhaseCallable = Callable[..., dict[str, Any] | None]
_REGISTRY: dict[str, PhaseCallable] = {}


def phase_callable(name: str) -> Callable[[PhaseCallable], PhaseCallable]:
    """Register ``fn(ctx, **args)`` under ``name``; it may return a JSON-able output dict."""

    def register(fn: PhaseCallable) -> PhaseCallable:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"phase callable {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return register


def _load() -> None:
    # import_module is a dict lookup once a module is loaded; reading the setting each time
    # keeps the registry true to it.
    for module in settings.PHASE_CALLABLE_MODULES:
        importlib.import_module(module)


def callable_get(name: str) -> PhaseCallable | None:
    _load()
    fn = _REGISTRY.get(name)
    return fn if fn is not None and fn.__module__ in settings.PHASE_CALLABLE_MODULES else None


def callable_names() -> list[str]:
    _load()
    return sorted(n for n, fn in _REGISTRY.items() if fn.__module__ in settings.PHASE_CALLABLE_MODULES)
