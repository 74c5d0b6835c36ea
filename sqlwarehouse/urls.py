from django.urls import path

from sqlwarehouse import views

app_name = "sqlwarehouse"
urlpatterns = [
    path("", views.editor, name="editor"),
    path("executions/<int:execution_id>/", views.execution, name="execution"),
    path("history/", views.history, name="history"),
    path("saved/", views.saved_list, name="saved"),
]
