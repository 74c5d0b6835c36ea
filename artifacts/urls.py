from django.urls import path

from artifacts import views

app_name = "artifacts"
urlpatterns = [
    path("", views.artifact_index, name="list"),
    path("<int:artifact_id>/", views.artifact_detail, name="detail"),
    path("<int:artifact_id>/download", views.artifact_download, name="download"),
]
