from django.contrib import admin
from django.urls import include, path

from controlroom import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("hooks/", include("runs.webhook_urls")),
    path("accounts/", include("allauth.urls")),
    path("w/<slug:workspace>/tokens/", views.token_list, name="token_list"),
    path("w/<slug:workspace>/", include("runs.urls")),
    path("w/<slug:workspace>/", include("runs.schedule_urls")),
    path("w/<slug:workspace>/artifacts/", include("artifacts.urls")),
    path("w/<slug:workspace>/sql/", include("sqlwarehouse.urls")),
    path("api/v1/workspaces/<slug:workspace>/", include("runs.api_urls")),
    path("api/v1/ops/", include("runs.ops_urls")),
]
