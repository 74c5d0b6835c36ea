"""The ``superset`` connection kind without a Superset: its admin form builds the config (with the
password reference of Superset's own Trino login, never the Trino service user's) and puts each
error beside its field, only admins reach it, a reference it names cannot be deleted or renamed,
the pages offer "Publish to Superset" only to operators and admins where a Superset connection
serves, and the Rison of Superset's filters. (Publishing itself runs against a real Superset in
tests/test_superset.py.)"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from connections.configure import secret_ref_delete, secret_ref_update
from connections.models import Connection, SecretRef
from controlroom.models import AuditEvent
from controlroom.services import ServiceError
from lakehouse.models import Table
from lakehouse.superset_client import rison
from lakehouse.superset_config import read_only_user, superset_config_errors
from sqlwarehouse.models import SavedQuery

pytestmark = pytest.mark.django_db
NEW = "/w/acme/settings/connections/new/superset/"


@pytest.fixture
def refs(world, settings) -> SecretRef:
    settings.SECRET_ENV_PREFIX = "CONTROLROOM_SECRET_"
    service = SecretRef.objects.create(workspace=world.workspace, name="trino-pw", source="env",
                                       locator="CONTROLROOM_SECRET_TRINO_PW")
    Connection.objects.create(workspace=world.workspace, name="trino", kind="trino", password_ref=service,
                              config={"host": "127.0.0.1", "port": 8443, "http_scheme": "https"})
    SecretRef.objects.create(workspace=world.workspace, name="superset-trino", source="env",
                             locator="CONTROLROOM_SECRET_SUPERSET_TRINO_PW")
    return SecretRef.objects.create(workspace=world.workspace, name="superset-pw", source="env",
                                    locator="CONTROLROOM_SECRET_SUPERSET_PW")


def post(refs: SecretRef, **overrides) -> dict:
    data = {"name": "bi", "environment": "", "url": "https://superset.example/", "username": "controlroom",
            "password_ref": str(refs.pk), "trino_connection": "trino", "trino_user": "superset",
            "trino_password_ref": "superset-trino", "verify": "on"}
    data.update(overrides)
    return data


def test_the_form_makes_a_superset_connection_audited(world, refs):
    assert NEW == reverse("workspace_admin:connection_new", kwargs={"workspace": "acme", "kind": "superset"})
    admin = world.client("admin")
    assert admin.get(NEW).status_code == 200
    for persona in ("viewer", "analyst", "operator"):
        assert world.client(persona).get(NEW).status_code == 403
    response = admin.post(NEW, post(refs))
    assert response.status_code == 302, response.context["form"].errors
    conn = Connection.objects.get(workspace=world.workspace, name="bi")
    assert conn.kind == "superset" and conn.password_ref == refs
    assert conn.config == {"url": "https://superset.example", "username": "controlroom", "trino_connection": "trino",
                           "trino_user": "superset", "trino_password_ref": "superset-trino", "verify": True}
    assert read_only_user(conn) == "superset~ro"
    event = AuditEvent.objects.get(action="connection.create", target_id=str(conn.pk))
    assert event.after["kind"] == "superset" and event.after["password_ref"] == "superset-pw"
    edit = admin.get(f"/w/acme/settings/connections/{conn.pk}/").content.decode()
    assert 'value="superset"' in edit and "Signs in to Superset" in edit
    assert '<option value="superset-trino" selected>superset-trino</option>' in edit


@pytest.mark.parametrize(("overrides", "field", "text"), [
    ({"url": "ftp://superset.example"}, "url", "http(s) address"),
    ({"trino_connection": "warehouse"}, "trino_connection", "name a Trino connection; 'warehouse' is duckdb"),
    ({"trino_connection": "nope"}, "trino_connection", "names no connection of this workspace"),
    ({"trino_user": "superset~ro"}, "trino_user", "read-only identity <user>~ro"),
    ({"password_ref": ""}, "password_ref", "required"),
    ({"trino_password_ref": ""}, "trino_password_ref", "required"),
    ({"trino_password_ref": "nope"}, "trino_password_ref", "Select a valid choice"),
    ({"trino_password_ref": "trino-pw"}, "trino_password_ref", "not be the Trino service user's password"),
])
def test_errors_land_on_their_fields(world, refs, overrides, field, text):
    response = world.client("admin").post(NEW, post(refs, **overrides))
    assert response.status_code == 200
    errors = list(response.context["form"].errors.get(field, []))
    assert any(text in e for e in errors), response.context["form"].errors
    assert not Connection.objects.filter(kind="superset").exists()


def test_the_trino_password_reference_cannot_go_while_named(world, refs):
    assert world.client("admin").post(NEW, post(refs)).status_code == 302
    used = SecretRef.objects.get(workspace=world.workspace, name="superset-trino")
    admin = world.access("admin")
    with pytest.raises(ServiceError, match="Secret reference 'superset-trino' is the Trino password of Superset "
                                           "connection bi: change that connection first"):
        secret_ref_delete(access=admin, secret_id=used.pk)
    with pytest.raises(ValidationError, match="Superset connection bi names this reference as 'superset-trino': "
                                              "change that connection first"):
        secret_ref_update(access=admin, secret_id=used.pk, name="renamed", source="env",
                          locator="CONTROLROOM_SECRET_SUPERSET_TRINO_PW")
    page = world.client("admin").get("/w/acme/settings/secrets/").content.decode()
    assert "bi (Trino password)" in page
    assert SecretRef.objects.filter(pk=used.pk, name="superset-trino").exists()
    assert not AuditEvent.objects.filter(action__in=["secret_ref.delete", "secret_ref.update"]).exists()
    # Where it points may change (a rotated password), the name it is named by not.
    secret_ref_update(access=admin, secret_id=used.pk, name="superset-trino", source="env",
                      locator="CONTROLROOM_SECRET_SUPERSET_TRINO_PW2")


def test_the_button_shows_for_operators_where_a_superset_connection_serves(world, refs):
    ws = world.workspace
    table = Table.objects.create(workspace=ws, environment=ws.environments.get(name="dev"), namespace="sales",
                                 name="orders", format=Table.Format.ICEBERG)
    table.versions.create(version=1, operation="create", committed_at=timezone.now())
    saved = SavedQuery.objects.create(workspace=ws, title="q", sql="SELECT 1", owner=world.users["analyst"],
                                      connection=Connection.objects.get(workspace=ws, name="trino"))
    pages = (f"/w/acme/tables/{table.pk}/", f"/w/acme/sql/saved/{saved.pk}/")
    for page in pages:  # no Superset connection yet: no button
        assert 'id="superset-publish"' not in world.client("admin").get(page).content.decode()
    Connection.objects.create(workspace=ws, name="bi", kind="superset", password_ref=refs, config={
        "url": "https://superset.example", "username": "u", "trino_connection": "trino", "trino_user": "superset",
        "trino_password_ref": "superset-trino"})
    for page in pages:
        for persona, shown in (("viewer", False), ("analyst", False), ("operator", True), ("admin", True)):
            html = world.client(persona).get(page).content.decode()
            assert ('id="superset-publish"' in html) is shown, (persona, page)
        assert 'id="superset-link"' not in html  # nothing published yet


def test_config_rules_and_rison():
    assert superset_config_errors({"url": "https://s.example", "username": "u", "trino_connection": "trino",
                                   "trino_user": "superset", "trino_password_ref": "bi"}) == []
    assert len(superset_config_errors({})) == 5 and superset_config_errors([]) == ["The config must be an object."]
    assert superset_config_errors({"url": "https://s.example", "username": "u", "trino_connection": "trino",
                                   "trino_user": "superset", "trino_password_ref": "no/slug"}) == [
        "'trino_password_ref' must name the secret reference of the password of Superset's own Trino login "
        "(<user>~ro)"]
    assert rison({"filters": [{"col": "uuid", "opr": "eq", "value": "it's!"}], "page_size": 100, "x": True}) == \
        "('filters':!(('col':'uuid','opr':'eq','value':'it!'s!!')),'page_size':100,'x':!t)"


def test_publish_urls_by_persona_without_a_superset(world, refs):
    """POST only; outsiders 404, viewers and analysts 403, anonymous to the login; an operator
    where no Superset connection serves gets one sentence and nothing is recorded."""
    from django.test import Client

    from lakehouse.superset_models import SupersetPublication

    ws = world.workspace
    table = Table.objects.create(workspace=ws, environment=ws.environments.get(name="dev"), namespace="sales",
                                 name="orders", format=Table.Format.ICEBERG)
    trino = Connection.objects.get(workspace=ws, name="trino")
    saved = SavedQuery.objects.create(workspace=ws, title="q", sql="SELECT 1", owner=world.users["analyst"],
                                      connection=trino)
    private = SavedQuery.objects.create(workspace=ws, title="mine", sql="SELECT 1", owner=world.users["admin"],
                                        connection=trino, visibility=SavedQuery.Visibility.PRIVATE)
    urls = [reverse("lakehouse:table_superset_publish", args=["acme", table.pk]),
            reverse("sqlwarehouse:saved_superset_publish", args=["acme", saved.pk])]
    assert urls == [f"/w/acme/tables/{table.pk}/superset/", f"/w/acme/sql/saved/{saved.pk}/superset/"]
    for url in urls:
        for persona in ("viewer", "analyst"):
            assert world.client(persona).post(url).status_code == 403
        assert world.client("outsider").post(url).status_code == 404
        assert world.client("operator").get(url).status_code == 405
        anonymous = Client().post(url)
        assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
        page = world.client("operator").post(url, follow=True).content.decode()
        assert "This workspace has no Superset connection; a workspace admin adds one" in page
    assert world.client("operator").post(f"/w/acme/sql/saved/{private.pk}/superset/").status_code == 404
    assert world.client("operator").post("/w/acme/tables/999999/superset/").status_code == 404
    assert not SupersetPublication.objects.exists()
    assert AuditEvent.objects.filter(action="superset.publish").count() == 0
