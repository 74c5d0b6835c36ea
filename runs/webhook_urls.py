from django.urls import path

from runs import webhooks

urlpatterns = [
    path("git/<slug:workspace>", webhooks.git_push, name="hook_git_push"),
]
