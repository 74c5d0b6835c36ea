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
_loaded = False


def phase_callable(name: str) -> Callable[[PhaseCallable], PhaseCallable]:
    """Register ``fn(ctx, **args)`` under ``name``; it may return a JSON-able output dict."""

    def register(fn: PhaseCallable) -> PhaseCallable:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"phase callable {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return register


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in settings.PHASE_CALLABLE_MODULES:
            importlib.import_module(module)
        _loaded = True


def callable_get(name: str) -> PhaseCallable | None:
    _load()
    return _REGISTRY.get(name)


def callable_names() -> list[str]:
    _load()
    return sorted(_REGISTRY)
