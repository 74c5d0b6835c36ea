from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from controlroom import health, views
from runs import hook_views

# Staff sign in through allauth's login, so /admin/login/ has the same rate limits; a signed-in
# user who is not active staff gets 403 there instead of the admin's own login form.
admin.site.login = secure_admin_login(admin.site.login)

# Under /api/ and /hooks/ every error, even a path that matches nothing, is JSON.
handler400 = "controlroom.errors.bad_request"
handler403 = "controlroom.errors.forbidden"
handler404 = "controlroom.errors.not_found"
handler500 = "controlroom.errors.server_error"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    # The admin's own password change checks the old password without a limit and unaudited:
    # staff change theirs on allauth's page (rate-limited, audited) like everyone else.
    path("admin/password_change/", RedirectView.as_view(pattern_name="account_change_password")),
    path("admin/password_change/done/", RedirectView.as_view(pattern_name="account_change_password")),
    path("admin/", admin.site.urls),
    path("hooks/", include("runs.webhook_urls")),
    path("accounts/", include("allauth.urls")),
    path("w/<slug:workspace>/tokens/", views.token_list, name="token_list"),
    path("w/<slug:workspace>/settings/", include("controlroom.workspace_admin.urls")),
    path("w/<slug:workspace>/jobs/<slug:job>/hooks/", hook_views.job_hook_action, name="job_hooks"),
    path("w/<slug:workspace>/", include("runs.urls")),
    path("w/<slug:workspace>/", include("runs.schedule_urls")),
    path("w/<slug:workspace>/artifacts/", include("artifacts.urls")),
    path("w/<slug:workspace>/sql/", include("sqlwarehouse.urls")),
    path("api/v1/workspaces/<slug:workspace>/sql/", include("sqlwarehouse.api_urls")),
    path("api/v1/workspaces/<slug:workspace>/", include("runs.api_urls")),
    path("api/v1/ops/", include("runs.ops_urls")),
    # The IDE API (the token names the workspace), also under the bare /v1/ its first clients
    # were written against.
    path("api/v1/", include(("runs.ide_urls", "ide"), namespace="ide")),
    path("v1/", include(("runs.ide_urls", "ide"), namespace="ide_v1")),
    path("", include("lakehouse.urls")),
]
