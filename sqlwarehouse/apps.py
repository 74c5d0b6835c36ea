from django.apps import AppConfig


class SqlwarehouseConfig(AppConfig):
    name = "sqlwarehouse"
