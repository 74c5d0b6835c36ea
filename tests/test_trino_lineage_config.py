"""The lineage fields of `trino` phases (``catalog``, ``outputs``, ``inputs``), checked when a job
is saved; what the phase records with them, against the real Trino and S3, is in
test_shared_catalog.py."""

from __future__ import annotations

import pytest

from runs.executors import config_errors

SQL = "INSERT INTO iceberg.sales.orders SELECT * FROM iceberg.raw.orders"


def errors(**fields) -> list[str]:
    return config_errors("trino", {"sql": SQL, **fields})


def test_declared_tables_of_a_catalog_connection_are_accepted():
    assert errors() == []
    assert errors(catalog="shared", outputs=["sales.orders"], inputs=["raw.orders", "raw.customers"]) == []
    assert errors(outputs=["sales.orders"]) == []  # catalog defaults to "lakehouse"


def test_a_trino_qualified_name_is_refused_with_the_form_to_use():
    assert errors(catalog="shared", outputs=["iceberg.sales.orders"]) == [
        "'outputs' entry 'iceberg.sales.orders' is not a table name: write 'sales.orders', the namespace.name "
        "of the catalog connection (plain lower-case identifiers) named by 'catalog', not Trino's "
        "catalog.schema.table"]


@pytest.mark.parametrize("bad", ["orders", "Sales.Orders", "sales.orders.x.y", "sales.", 42, None, "a-b.c"])
def test_other_table_name_forms_are_refused(bad):
    assert errors(inputs=[bad]) == [
        f"'inputs' entry {bad!r} is not a table name: write it as namespace.name of the catalog connection "
        "(plain lower-case identifiers)"]


def test_lists_catalog_names_and_unused_fields():
    assert errors(outputs="sales.orders") == [
        "'outputs' must be a non-empty list of tables, each namespace.name of the catalog connection "
        "(plain lower-case identifiers)"]
    assert errors(inputs=[]) == [
        "'inputs' must be a non-empty list of tables, each namespace.name of the catalog connection "
        "(plain lower-case identifiers)"]
    assert errors(outputs=["sales.orders", "sales.orders"]) == ["'outputs' names a table twice"]
    assert errors(catalog="no good", outputs=["sales.orders"]) == [
        "'catalog' must be a catalog connection's name (letters, digits, - and _), not 'no good'"]
    assert errors(catalog="shared") == [
        "'catalog' has no use without 'outputs' or 'inputs' (the tables whose versions to record)"]
    assert errors(output=["sales.orders"]) == ["unknown trino config field 'output'"]
