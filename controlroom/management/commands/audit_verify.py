"""Verify every audit chain: one line per chain, exit status 1 when any was tampered with."""

from __future__ import annotations

import contextlib
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controlroom.audit import audit_verify_all, chain_workspace_id
from controlroom.models import Workspace


class Command(BaseCommand):
    help = "Verify the audit log's chains and their sealed heads; exit 1 if any was tampered with."

    def handle(self, *args: Any, **options: Any) -> None:
        verdicts = audit_verify_all()
        ids = set()
        for verdict in verdicts:
            with contextlib.suppress(ValueError):
                ids.add(chain_workspace_id(verdict.chain))
        slugs = {f"ws:{pk}": slug for pk, slug in Workspace.objects.filter(pk__in=ids - {None})
                 .values_list("pk", "slug")}
        for verdict in verdicts:
            name = f"{verdict.chain} ({slugs[verdict.chain]})" if verdict.chain in slugs else verdict.chain
            if verdict.ok:
                self.stdout.write(f"{name}: ok ({verdict.events} events)")
            else:
                at = f" [event {verdict.first_bad_id}]" if verdict.first_bad_id else ""
                self.stdout.write(f"{name}: TAMPERED: {verdict.reason}{at}")
        if not verdicts:
            self.stdout.write("no audit events yet")
        bad = sum(not verdict.ok for verdict in verdicts)
        if bad:
            raise CommandError(f"{bad} of {len(verdicts)} audit chains do not verify", returncode=1)
