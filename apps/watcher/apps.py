from django.apps import AppConfig


class WatcherConfig(AppConfig):
    name = "apps.watcher"
    label = "watcher"
