from django.urls import path

from sqlwarehouse import api

urlpatterns = [
    path("executions", api.executions, name="api_sql_executions"),
    path("executions/<int:execution_id>", api.execution, name="api_sql_execution"),
]
