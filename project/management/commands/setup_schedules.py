"""`manage.py setup_schedules`: create or update Custos's django-celery-beat entries (idempotent)."""

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from project.schedules import schedule_specs


class Command(BaseCommand):
    help = "Create or update every beat schedule entry Custos needs; safe to run any number of times."

    def handle(self, *args, **options):
        created = updated = unchanged = 0
        with transaction.atomic():
            for spec in schedule_specs():
                interval, _ = IntervalSchedule.objects.get_or_create(
                    every=spec.every_seconds, period=IntervalSchedule.SECONDS
                )
                task = PeriodicTask.objects.filter(name=spec.name).first()
                wanted = {"task": str(spec.task), "interval": interval, "description": spec.description}
                if task is None:
                    PeriodicTask.objects.create(name=spec.name, enabled=True, **wanted)
                    created += 1
                elif any(getattr(task, k) != v for k, v in wanted.items()):
                    for key, value in wanted.items():
                        setattr(task, key, value)
                    task.save()
                    updated += 1
                else:
                    unchanged += 1
        self.stdout.write(f"schedules: {created} created, {updated} updated, {unchanged} unchanged")
