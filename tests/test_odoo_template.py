"""The Odoo template (demo/jobs/odoo-finance.yaml) on a real PostgreSQL with Odoo-shaped data:
bronze → silver → gold marts with checks, run by a schedule every minute. After the source changes
(payments, renames, new orders, deleted drafts), the next tick's run brings gold exactly to the
source's numbers, within two minutes of the change, and the table pages and /metrics say how far
behind the source each table is."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from demo.odoo.generate import odoo_mutate
from lakehouse.models import Table, TableVersion
from runs.models import RunStatus
from runs.services.jobs import job_create
from runs.services.schedules import schedule_set, schedule_tick
from tests.lakehouse_helpers import errors, lake_of, table_rows

pytestmark = [pytest.mark.django_db, pytest.mark.slow, pytest.mark.once]

TEMPLATE = Path(__file__).resolve().parent.parent / "demo" / "jobs" / "odoo-finance.yaml"
REVENUE = ("SELECT date_trunc('month', invoice_date)::date, partner_id, count(*), sum(amount_untaxed_signed) "
           "FROM account_move WHERE state = 'posted' AND move_type IN ('out_invoice', 'out_refund') "
           "GROUP BY 1, 2 ORDER BY 1, 2")
RECEIVABLES = ("SELECT l.partner_id, count(DISTINCT l.move_id), sum(l.amount_residual) FROM account_move_line l "
               "JOIN account_move m ON m.id = l.move_id JOIN account_account a ON a.id = l.account_id "
               "WHERE a.account_type = 'asset_receivable' AND m.state = 'posted' AND NOT l.reconciled "
               "AND l.amount_residual <> 0 GROUP BY 1 ORDER BY 1")


def gold(world, table: str, columns: list[str]) -> list[tuple]:
    data = table_rows(lake_of(world), "iceberg", f"gold.{table}").sort_by([(c, "ascending") for c in columns[:2]])
    return [tuple(row[c] for c in columns) for row in data.to_pylist()]


def cents(rows: list[tuple]) -> list[tuple]:
    return [tuple(v.quantize(Decimal("0.01")) if isinstance(v, Decimal) else v for v in row) for row in rows]


def assert_gold_matches_source(world, source) -> None:
    assert cents(gold(world, "revenue_by_month_customer", ["month", "partner_id", "invoices", "revenue"])) == \
        cents(source.rows(REVENUE))
    assert cents(gold(world, "open_receivables", ["partner_id", "open_invoices", "amount_due"])) == \
        cents(source.rows(RECEIVABLES))


def test_scheduled_template_keeps_gold_equal_to_the_source_within_two_minutes(
        world, eager_celery, odoo_source, client, django_capture_on_commit_callbacks):
    odoo_source.connection(world.workspace)
    # Deletes are reconciled every run here (the template's hour would skip the second run's).
    text = TEMPLATE.read_text().replace("reconcile_every_s: 3600", "reconcile_every_s: 0") \
        .replace("settle_s: 5", "settle_s: 1")
    job = job_create(access=world.access("operator"), spec_text=text)
    schedule = schedule_set(access=world.access("operator"), job=job, environment="dev", cron="* * * * *")
    start = timezone.now().replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    time.sleep(1.2)  # the data was just written: the template reads changes at least settle_s old
    with django_capture_on_commit_callbacks(execute=True):
        (first,) = schedule_tick(schedule_id=schedule.pk, now=start)
    first.refresh_from_db()
    assert first.status == RunStatus.SUCCEEDED, errors(first)
    assert_gold_matches_source(world, odoo_source)

    with odoo_source.connect() as conn:
        changes = odoo_mutate(conn, payments=25, renames=5, new_orders=20, deleted_drafts=4)
    changed_at = timezone.now()
    time.sleep(1.2)  # the template reads changes at least settle_s old
    with django_capture_on_commit_callbacks(execute=True):
        (second,) = schedule_tick(schedule_id=schedule.pk, now=start + dt.timedelta(minutes=1))
    second.refresh_from_db()
    assert second.status == RunStatus.SUCCEEDED, errors(second)
    assert changes.deleted["sale_order"] and changes.updated["account_move"]
    assert_gold_matches_source(world, odoo_source)
    bronze = {t["source"]: t for t in second.phases.get(name="bronze").output["tables"]}
    assert bronze["sale_order"]["rows_deleted"] == len(changes.deleted["sale_order"])
    assert bronze["account_move"]["rows_written"] == len(changes.updated["account_move"] |
                                                         changes.inserted["account_move"])

    # Freshness: the gold commit holds the source as of after the change, within two minutes of it.
    receivables = TableVersion.objects.filter(table__name="open_receivables", run=second).get()
    assert receivables.source_as_of is not None and receivables.source_as_of >= changed_at
    assert (receivables.committed_at - changed_at).total_seconds() < 120
    assert 0 <= receivables.source_lag_s < 120
    # …and silver took its bound from bronze, gold the oldest of its inputs'.
    bronze_moves = TableVersion.objects.filter(table__namespace="bronze", table__name="account_move",
                                               run=second).get()
    assert receivables.source_as_of <= bronze_moves.source_as_of

    client.force_login(world.users["viewer"])
    table = Table.objects.get(namespace="gold", name="open_receivables")
    page = client.get(f"/w/{world.workspace.slug}/tables/{table.pk}/").content.decode()
    assert 'id="source-freshness"' in page and "behind" in page
    listing = client.get(f"/w/{world.workspace.slug}/tables/").content.decode()
    assert listing.count("behind the source") >= 1
