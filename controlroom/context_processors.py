"""Template context for every page (nothing here may query the database)."""

from django.conf import settings
from django.http import HttpRequest


def sso(request: HttpRequest) -> dict:
    """``sso_only``: the login page shows only the identity provider's button."""
    return {"sso_only": settings.SSO_ONLY}
