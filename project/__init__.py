"""Custos Django project: settings, URLs and the process entry points."""

# Loaded with Django in every process, so Celery's current app (which project.queues sends through)
# is Custos's, configured from the settings.
from celery_app import app as celery_app

__all__ = ["celery_app"]
