from django.urls import path

from runs import schedule_views

app_name = "schedules"
urlpatterns = [
    path("jobs/<slug:job>/schedule/", schedule_views.schedule_edit, name="schedule_edit"),
]
