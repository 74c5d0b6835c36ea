from django.http import HttpRequest

from controlroom.selectors import workspaces_for_user


def workspaces(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_workspaces": []}
    return {"nav_workspaces": list(workspaces_for_user(user=user)[:50])}
