"""Realistic Odoo-shaped data in a PostgreSQL database (``demo/odoo/schema.sql``), without Odoo.

Partners, products, sale orders with their lines, and for confirmed orders a posted customer
invoice whose journal items balance (receivable debit = income credits + tax credit); some are
paid (residual 0, reconciled), some partly, most open. ``odoo_mutate`` changes the data as Odoo
users would between two ingests and returns exactly what it changed, so tests can check that the
next ingest picks up those changes and nothing else.

    python -m demo.odoo.generate postgres://user@host:port/db --partners 300 --orders 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).with_name("schema.sql")
CENT = Decimal("0.01")
TAX = Decimal("0.20")
ACCOUNTS = [("121000", "Account Receivable", "asset_receivable", True), ("400000", "Product Sales", "income", False),
            ("251000", "Tax Received", "liability_current", False), ("101401", "Bank", "asset_cash", False)]
RECEIVABLE, INCOME, TAX_ACCOUNT = 1, 2, 3
COUNTRIES = ["BE", "DE", "ES", "FR", "GB", "NL", "US"]
_WORDS = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Wonka", "Hooli", "Vandelay", "Tyrell",
          "Cyberdyne", "Soylent", "Gringotts", "Oscorp", "Aperture", "Monarch", "Pied Piper", "Dunder"]


@dataclass
class Changes:
    """What one ``odoo_mutate`` call did, by table: ids updated, inserted and hard-deleted."""

    updated: dict[str, set[int]] = field(default_factory=dict)
    inserted: dict[str, set[int]] = field(default_factory=dict)
    deleted: dict[str, set[int]] = field(default_factory=dict)

    def add(self, kind: str, table: str, ids: list[int] | set[int]) -> None:
        getattr(self, kind).setdefault(table, set()).update(ids)


def odoo_schema_create(conn: Any) -> None:
    """Create the Odoo tables in ``conn``'s database (a psycopg connection)."""
    conn.execute(SCHEMA.read_text())
    conn.commit()


def _money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(CENT)


def _copy(conn: Any, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _next_id(conn: Any, table: str) -> int:
    return conn.execute(f"SELECT COALESCE(max(id), 0) + 1 FROM {table}").fetchone()[0]


def odoo_generate(conn: Any, *, partners: int = 300, orders: int = 1000, products: int = 25, seed: int = 7,
                  now: dt.datetime | None = None) -> None:
    """Fill the tables: ``partners`` customers, ``products`` products, ``orders`` sale orders over
    the last year (1 to 4 lines each), an invoice for each confirmed one."""
    rng = random.Random(seed)
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    _copy(conn, "account_account", ["id", "code", "name", "account_type", "reconcile", "write_date"],
          [(i, code, json.dumps({"en_US": name}), kind, rec, now) for i, (code, name, kind, rec) in
           enumerate(ACCOUNTS, start=1)])
    _copy(conn, "res_partner", ["id", "name", "email", "is_company", "customer_rank", "country_code", "write_date"],
          [(i, f"{rng.choice(_WORDS)} {rng.choice(['SA', 'GmbH', 'Ltd', 'BV', 'Inc'])} {i}",
            f"billing{i}@example.com", True, 1, rng.choice(COUNTRIES), now - dt.timedelta(days=rng.randint(0, 400)))
           for i in range(1, partners + 1)])
    _copy(conn, "product_template", ["id", "name", "list_price", "write_date"],
          [(i, json.dumps({"en_US": f"Product {i}"}), _money(rng.uniform(5, 500)), now)
           for i in range(1, products + 1)])
    _copy(conn, "product_product", ["id", "product_tmpl_id", "default_code", "write_date"],
          [(i, i, f"P{i:04d}", now) for i in range(1, products + 1)])
    _orders(conn, rng, range(1, orders + 1), partners=partners, products=products, now=now, first_line=1, first_move=1,
            first_move_line=1)
    for table in ("res_partner", "product_template", "product_product", "account_account", "sale_order",
                  "sale_order_line", "account_move", "account_move_line"):
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                     f"(SELECT COALESCE(max(id), 1) FROM {table}))")
    conn.commit()


def _orders(conn: Any, rng: random.Random, ids: range, *, partners: int, products: int, now: dt.datetime,
            first_line: int, first_move: int, first_move_line: int, changes: Changes | None = None) -> None:
    order_rows, line_rows, move_rows, move_line_rows = [], [], [], []
    line_id, move_id, move_line_id = first_line, first_move, first_move_line
    for order_id in ids:
        partner = rng.randint(1, partners)
        ordered = now - dt.timedelta(days=rng.uniform(0, 365)) if changes is None else now
        state = rng.choices(["sale", "draft", "cancel"], weights=[80, 15, 5])[0]
        untaxed = Decimal(0)
        for _ in range(rng.randint(1, 4)):
            qty, price = Decimal(rng.randint(1, 20)), _money(rng.uniform(5, 500))
            subtotal = (qty * price).quantize(CENT)
            untaxed += subtotal
            line_rows.append((line_id, order_id, rng.randint(1, products), "line", qty, price, subtotal,
                              (subtotal * (1 + TAX)).quantize(CENT), now))
            line_id += 1
        tax = (untaxed * TAX).quantize(CENT)
        order_rows.append((order_id, f"S{order_id:05d}", partner, ordered, state, untaxed, tax, untaxed + tax, 1, now))
        if state != "sale":
            continue
        total = untaxed + tax
        paid = rng.choices(["paid", "partial", "not_paid"], weights=[50, 10, 40])[0]
        residual = Decimal(0) if paid == "paid" else (total / 2).quantize(CENT) if paid == "partial" else total
        invoiced = (ordered + dt.timedelta(days=rng.randint(0, 5))).date()
        move_rows.append((move_id, f"INV/{invoiced.year}/{move_id:05d}", "out_invoice", "posted", partner,
                          f"S{order_id:05d}", invoiced, invoiced + dt.timedelta(days=30), untaxed, total, residual,
                          residual, paid, 1, now))
        zero, line = Decimal(0), move_line_id
        move_line_rows += [
            (line, move_id, RECEIVABLE, partner, invoiced, total, zero, total, residual, paid == "paid", now),
            (line + 1, move_id, INCOME, partner, invoiced, zero, untaxed, -untaxed, zero, False, now),
            (line + 2, move_id, TAX_ACCOUNT, partner, invoiced, zero, tax, -tax, zero, False, now)]
        if changes is not None:
            changes.add("inserted", "account_move", [move_id])
            changes.add("inserted", "account_move_line", range(move_line_id, move_line_id + 3))
        move_id, move_line_id = move_id + 1, move_line_id + 3
    _copy(conn, "sale_order", ["id", "name", "partner_id", "date_order", "state", "amount_untaxed", "amount_tax",
                               "amount_total", "currency_id", "write_date"], order_rows)
    _copy(conn, "sale_order_line", ["id", "order_id", "product_id", "name", "product_uom_qty", "price_unit",
                                    "price_subtotal", "price_total", "write_date"], line_rows)
    _copy(conn, "account_move", ["id", "name", "move_type", "state", "partner_id", "invoice_origin", "invoice_date",
                                 "invoice_date_due", "amount_untaxed_signed", "amount_total_signed", "amount_residual",
                                 "amount_residual_signed", "payment_state", "currency_id", "write_date"], move_rows)
    _copy(conn, "account_move_line", ["id", "move_id", "account_id", "partner_id", "date", "debit", "credit",
                                      "balance", "amount_residual", "reconciled", "write_date"], move_line_rows)
    if changes is not None:
        changes.add("inserted", "sale_order", list(ids))
        changes.add("inserted", "sale_order_line", range(first_line, line_id))


def odoo_mutate(conn: Any, *, seed: int = 11, payments: int = 20, renames: int = 10, new_orders: int = 15,
                deleted_drafts: int = 5, now: dt.datetime | None = None) -> Changes:
    """What Odoo users do between two ingests: register payments on open invoices (the move and
    its receivable line change), rename customers, enter new orders (with invoices for confirmed
    ones), and delete draft orders with their lines (Odoo deletes those rows outright)."""
    rng = random.Random(seed)
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    changes = Changes()
    open_moves = [r[0] for r in conn.execute(
        "SELECT id FROM account_move WHERE payment_state <> 'paid' ORDER BY id").fetchall()]
    paid = sorted(rng.sample(open_moves, min(payments, len(open_moves))))
    if paid:
        conn.execute("UPDATE account_move SET amount_residual = 0, amount_residual_signed = 0, payment_state = 'paid', "
                     "write_date = %s WHERE id = ANY(%s)", (now, paid))
        lines = [r[0] for r in conn.execute(
            "UPDATE account_move_line SET amount_residual = 0, reconciled = true, write_date = %s "
            "WHERE move_id = ANY(%s) AND account_id = %s RETURNING id", (now, paid, RECEIVABLE)).fetchall()]
        changes.add("updated", "account_move", paid)
        changes.add("updated", "account_move_line", lines)
    partners = conn.execute("SELECT max(id) FROM res_partner").fetchone()[0]
    renamed = sorted(rng.sample(range(1, partners + 1), min(renames, partners)))
    conn.execute("UPDATE res_partner SET name = name || ' (renamed)', write_date = %s WHERE id = ANY(%s)",
                 (now, renamed))
    changes.add("updated", "res_partner", renamed)
    drafts = [r[0] for r in conn.execute("SELECT id FROM sale_order WHERE state = 'draft' ORDER BY id").fetchall()]
    gone = sorted(rng.sample(drafts, min(deleted_drafts, len(drafts))))
    if gone:
        lines = [r[0] for r in conn.execute("DELETE FROM sale_order_line WHERE order_id = ANY(%s) RETURNING id",
                                            (gone,)).fetchall()]
        conn.execute("DELETE FROM sale_order WHERE id = ANY(%s)", (gone,))
        changes.add("deleted", "sale_order", gone)
        changes.add("deleted", "sale_order_line", lines)
    if new_orders:
        first = _next_id(conn, "sale_order")
        products = conn.execute("SELECT max(id) FROM product_product").fetchone()[0]
        _orders(conn, rng, range(first, first + new_orders), partners=partners, products=products, now=now,
                first_line=_next_id(conn, "sale_order_line"), first_move=_next_id(conn, "account_move"),
                first_move_line=_next_id(conn, "account_move_line"), changes=changes)
    conn.commit()
    return changes


def main() -> None:
    """Create and fill an Odoo-shaped database (the demo's and the benchmark's source)."""
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn")
    parser.add_argument("--partners", type=int, default=300)
    parser.add_argument("--orders", type=int, default=1000)
    opts = parser.parse_args()
    with psycopg.connect(opts.dsn) as conn:
        odoo_schema_create(conn)
        odoo_generate(conn, partners=opts.partners, orders=opts.orders)


if __name__ == "__main__":
    main()
