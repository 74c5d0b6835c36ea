"""An Odoo-shaped source database for the ingestion tests: a fresh database (``demo/odoo/schema.sql``,
filled by ``demo.odoo.generate``) on the PostgreSQL server of the PostgreSQL pass, or on one this
module starts when the tests run without it; and the ``postgres`` connection that reads it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from connections.models import Connection
from demo.odoo.generate import odoo_generate, odoo_schema_create
from tests.servers import PostgresServer


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A superuser URL of a real PostgreSQL server (the pass's own, else one started here)."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        yield url
        return
    with PostgresServer() as url:
        yield url


@dataclass
class OdooSource:
    """A source database and how to reach it."""

    url: str
    host: str
    port: int
    database: str
    user: str

    def connect(self) -> psycopg.Connection:
        """A new psycopg connection to the source (the test's side: generating and mutating)."""
        return psycopg.connect(self.url)

    def connection(self, workspace: Any, *, name: str = "odoo", **extra: Any) -> Connection:
        """The workspace's ``postgres`` connection to this source."""
        conn = Connection(workspace=workspace, name=name, kind=Connection.Kind.POSTGRES,
                          config={"host": self.host, "port": self.port, "database": self.database,
                                  "user": self.user, **extra})
        conn.full_clean()
        conn.save()
        return conn

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchone()[0]

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()


def make_source(admin_url: str, *, partners: int = 0, orders: int = 0) -> OdooSource:
    """A new database with the Odoo tables, filled when ``orders`` is given."""
    name = f"odoo_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    source = OdooSource(url=parts._replace(path=f"/{name}").geturl(), host=parts.hostname, port=parts.port,
                        database=name, user=parts.username)
    with source.connect() as conn:
        odoo_schema_create(conn)
        if orders:
            odoo_generate(conn, partners=partners, orders=orders)
    return source


@pytest.fixture
def odoo_source(postgres_admin_url: str) -> OdooSource:
    """A fresh Odoo-shaped database with 120 customers and 400 sale orders."""
    return make_source(postgres_admin_url, partners=120, orders=400)
