from django.urls import path

from runs import job_hooks, webhooks

urlpatterns = [
    path("git/<slug:workspace>", webhooks.git_push, name="hook_git_push"),
    path("jobs/<str:public_id>", job_hooks.job_hook_receive, name="hook_job"),
]
