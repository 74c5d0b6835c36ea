"""The SQL editor opens on the workspace's chosen default connection, not the first by name."""

import re

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from connections.models import Connection
from connections.services import connection_set_default, connections_for
from controlroom.models import AuditEvent
from controlroom.services import ServiceError

pytestmark = pytest.mark.django_db


def _selected(page: str) -> str:
    select = page[page.index('<select name="connection">'):].split("</select>")[0]
    return re.search(r'<option value="\d+" selected>([\w-]+)', select).group(1)


def test_the_editor_opens_on_the_default_connection(world):
    lake = Connection.objects.create(workspace=world.workspace, name="zz-lake", kind=Connection.Kind.DUCKDB,
                                     config={"database": "lake.duckdb"})
    analyst = world.client("analyst")
    assert _selected(analyst.get("/w/acme/sql/").content.decode()) == "warehouse"  # first by name
    with pytest.raises(PermissionDenied):
        connection_set_default(access=world.access("operator"), connection=lake)
    connection_set_default(access=world.access("admin"), connection=lake)
    assert [c.name for c in connections_for(workspace=world.workspace)] == ["zz-lake", "warehouse"]
    assert _selected(analyst.get("/w/acme/sql/").content.decode()) == "zz-lake"
    event = AuditEvent.objects.get(action="connection.set_default")
    assert (event.before, event.after) == ({"default": None}, {"default": "zz-lake"})
    # Another workspace's connection can never be made this one's default, nor two defaults exist.
    foreign = Connection.objects.get(workspace=world.other, name="warehouse")
    with pytest.raises(ServiceError):
        connection_set_default(access=world.access("admin"), connection=foreign)
    connection_set_default(access=world.access("admin"), connection=Connection.objects.get(
        workspace=world.workspace, name="warehouse"))
    assert list(Connection.objects.filter(workspace=world.workspace, is_default=True).values_list(
        "name", flat=True)) == ["warehouse"]
    with pytest.raises(IntegrityError), transaction.atomic():
        Connection.objects.filter(pk=lake.pk).update(is_default=True)
