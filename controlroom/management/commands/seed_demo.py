"""Seed the embedded demo: a workspace, a demo user who is its admin, a DuckDB connection, and the
demo jobs (``medallion``: DuckDB tables; ``lakehouse``: Iceberg and Delta tables on the workspace's catalog,
the embedded one unless a catalog connection named ``lakehouse`` says otherwise;
``lakehouse-spark``: the same on Spark, through the Spark connection ``spark``, local[2] here).

Idempotent: a second run changes nothing and prints the same credentials."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from connections.models import Connection
from controlroom.access import system_access
from controlroom.models import Membership, Role, Workspace
from controlroom.services import membership_set, workspace_create
from runs.models import Job
from runs.services.jobs import job_create
from sqlwarehouse.datasets import datasets_area

DEMO_JOBS = ("medallion", "lakehouse", "lakehouse-spark")  # demo/jobs/<name>.yaml, each a job of that slug
DEMO_DATA = settings.BASE_DIR / "demo" / "data"


class Command(BaseCommand):
    help = "Create the demo workspace, user, connections and the demo jobs (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="demo")

    def handle(self, *args, username: str, **options) -> None:
        password = self._password()
        User = get_user_model()
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=username)
            if created or not user.check_password(password):
                user.set_password(password)
                user.save()
            workspace = Workspace.objects.filter(slug="demo").first() or workspace_create(
                name="Demo", slug="demo", owner=user
            )
            # The printed user administers the demo workspace (members, audit log, settings, tokens),
            # even when the workspace was seeded for another user or their role was changed since.
            if not Membership.objects.filter(workspace=workspace, user=user, role=Role.ADMIN).exists():
                membership_set(access=system_access(workspace), user=user, role=Role.ADMIN)
            Connection.objects.get_or_create(
                workspace=workspace, environment=None, name="warehouse",
                defaults={"kind": Connection.Kind.DUCKDB, "config": {"database": "warehouse.duckdb"}},
            )
            Connection.objects.get_or_create(
                workspace=workspace, environment=None, name="spark",
                defaults={"kind": Connection.Kind.SPARK, "config": {"master": "local[2]"}},
            )
            for name in DEMO_JOBS:
                # A job already there (an older seed, or the user's edits) is left alone.
                if not Job.objects.filter(workspace=workspace, slug=name).exists():
                    path = f"demo/jobs/{name}.yaml"
                    job_create(access=system_access(workspace), spec_text=(settings.BASE_DIR / path).read_text(),
                               git_path=path)
        self._datasets(workspace)
        self.stdout.write(self._spark_status())
        self.stdout.write(f"Demo workspace ready. Sign in as {username} / {password}")

    def _spark_status(self) -> str:
        """One line: whether this machine runs the lakehouse-spark demo, and if not how to enable it."""
        from lakehouse.spark.runtime import RuntimeMissing, java17_home

        try:
            import pyspark  # noqa: F401
            if java17_home() is None:
                raise RuntimeMissing("no JDK 17 was found")
        except ImportError:
            return f"Spark demo (lakehouse-spark) off: {RuntimeMissing('pyspark is not installed')}"
        except RuntimeMissing as exc:
            return f"Spark demo (lakehouse-spark) off: {exc}"
        return "Spark demo (lakehouse-spark) runs on local[2] (JDK 17 and pyspark found)."

    def _datasets(self, workspace: Workspace) -> None:
        # The demo's inputs, copied into the workspace's own datasets area (where SQL reads them,
        # read-only); a file already there is the user's and is left alone.
        area = datasets_area(workspace)
        for source in sorted(DEMO_DATA.glob("*.csv")):
            target = area / source.name
            if not target.exists():
                shutil.copyfile(source, target)

    def _password(self) -> str:
        # One random password per data directory, kept beside the database (mode 0600).
        path = Path(settings.DATA_DIR) / "demo_password"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(12))
            path.chmod(0o600)
        return path.read_text().strip()
