"""`manage.py executor`: the standalone executor (see runs.remote), speaking only HTTP."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from runs.remote import build_parser, main


class Command(BaseCommand):
    help = "Claim and run phases over the HTTP contract (needs no database)."

    def run_from_argv(self, argv: list[str]) -> None:
        raise SystemExit(main(argv[2:]))

    def create_parser(self, prog_name: str, subcommand: str, **kwargs):
        return build_parser()
