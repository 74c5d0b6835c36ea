"""Test-only phase callables (listed in PHASE_CALLABLE_MODULES by the tests that use them)."""

from __future__ import annotations

from pathlib import Path

from runs.callables import phase_callable
from runs.executors.context import PhaseContext


@phase_callable("record_side_effect")
def record_side_effect(ctx: PhaseContext, *, path: str) -> dict:
    """Append one line per execution, so a test can count how often the phase really ran."""
    with Path(path).open("a") as fh:
        fh.write(f"{ctx.phase.pk}:{ctx.phase.attempt}\n")
    ctx.log("side effect recorded")
    return {"recorded": True}


@phase_callable("crash")
def crash(ctx: PhaseContext) -> None:
    raise KeyError("an executor bug")


@phase_callable("leak_secrets")
def leak_secrets(ctx: PhaseContext, *, catalog: str, fail: bool = False) -> dict:
    """A careless phase: prints its catalog's S3 key and password (and encodings of them) in
    every place a phase can write text, for tests/test_masking.py."""
    import base64
    import logging
    from urllib.parse import quote

    from lakehouse.catalogs import catalog_for
    from runs.executors.base import PhaseFailure

    lake = catalog_for(ctx.run.workspace, ctx.run.environment, catalog)
    key, password = lake.secret_key, lake.password
    ctx.log(f"connecting with S3 key {key}", s3={"secret": key, "auth": base64.b64encode(password.encode()).decode()})
    ctx.log("password, base64: " + base64.b64encode(password.encode()).decode())
    ctx.progress(f"url-encoded: {quote(password, safe='')}", nested=[{"deep": f"x{key}y"}])
    logging.getLogger("tests.leaky").warning("the phase's password is %s (key %s)", password, key)
    if fail:
        raise PhaseFailure(f"could not log in as lake with password {password}")
    return {"used_key": key, "note": f"base64 {base64.urlsafe_b64encode(key.encode()).decode()}"}


@phase_callable("crash_with_secret")
def crash_with_secret(ctx: PhaseContext, *, catalog: str) -> None:
    """An executor bug whose exception carries the catalog password (logged with its traceback)."""
    from lakehouse.catalogs import catalog_for

    raise KeyError(catalog_for(ctx.run.workspace, ctx.run.environment, catalog).password)
