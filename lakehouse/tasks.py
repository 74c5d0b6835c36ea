"""Celery tasks of the table registry: thin wrappers that load ids and call services."""

from __future__ import annotations

import logging

from celery import shared_task
from django.core.cache import cache

from lakehouse.catalogs import CatalogError
from lakehouse.fingerprint import FingerprintError
from lakehouse.services import table_version_fingerprint_fill, table_versions_unfingerprinted

log = logging.getLogger("controlroom.lakehouse")
_BUSY_SECONDS = 15 * 60  # longer than any fingerprint takes; the key is deleted when it is done


@shared_task(acks_late=True, ignore_result=True)
def table_version_fingerprint(version_id: int) -> None:
    """Fill the version's fingerprint (nothing if it has one). Enqueued when the version is
    recorded and by the sweep; a failure leaves it empty for the sweep to try again."""
    key = f"lakehouse:fingerprint:{version_id}"
    if not cache.add(key, 1, _BUSY_SECONDS):  # another worker computes it now (the sweep's copy)
        return
    try:
        table_version_fingerprint_fill(version_id=version_id)
    except (CatalogError, FingerprintError, OSError) as exc:
        log.warning("cannot fingerprint table version %s yet: %s", version_id, exc)
    finally:
        cache.delete(key)


@shared_task(ignore_result=True)
def table_versions_fingerprint_sweep() -> None:
    """Beat, every minute: enqueue versions left without a fingerprint (a lost message), a few a tick."""
    for version_id in table_versions_unfingerprinted():
        table_version_fingerprint.delay(version_id)
