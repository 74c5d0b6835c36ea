"""One check for every request's query and form values: text no database stores (NUL, which
PostgreSQL refuses) answers 400 before any view runs, instead of a 500 from whichever query
first meets it. JSON bodies are checked where they are parsed (``controlroom.api.json_body``);
API bodies are left unread here (an upload's lease and size are checked before its body is
read, by its view)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from controlroom.errors import JSON_PREFIXES
from controlroom.limits import text_problem


class RejectUnstorableTextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        values = [request.GET]
        if request.method == "POST" and not request.path.startswith(JSON_PREFIXES):
            values.append(request.POST)
        for query in values:
            for key, items in query.lists():
                for text in (key, *items):
                    if (problem := text_problem(text)) is not None:
                        return self._refuse(request, f"The field '{key[:40]}' {problem}.")
        return self.get_response(request)

    @staticmethod
    def _refuse(request: HttpRequest, message: str) -> HttpResponse:
        if request.path.startswith(JSON_PREFIXES) or request.path == "/api":
            from controlroom.api import api_error

            return api_error(400, "invalid", message)
        return render(request, "unstorable_text.html", {"message": message}, status=400)
