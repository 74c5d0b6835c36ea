from allauth.account.adapter import DefaultAccountAdapter
from django.http import HttpRequest


class ClosedSignupAdapter(DefaultAccountAdapter):
    """Accounts are created by admins (or OIDC later), not by open sign-up."""

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return False
