"""API tokens in the admin: issue with a level (the raw value is shown once), list with level and last
use, revoke. A token's level is fixed at issue: to change it, revoke the token and issue another."""

from django import forms
from django.contrib import admin, messages
from django_celery_beat import models as beat_models

from apps.gateway.models import ApiToken
from apps.gateway.services import api_token_create, api_token_revoke
from project.admin_shown import ShownOnly


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("user", "name", "level")

    def clean(self):
        data = super().clean()
        user, name = data.get("user"), data.get("name")
        if self.instance.pk is None and user and name:
            if ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).exists():
                self.add_error("name", "this user already has a live token with this name")
        return data


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ("name", "user", "level", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("level", "revoked_at")
    fields = ("user", "name", "level", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is None else ("user", "name", "level", *self.readonly_fields)

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead, so the list keeps the history

    def save_model(self, request, obj, form, change):
        if change:
            return
        issued = api_token_create(user=obj.user, name=obj.name, level=obj.level)
        obj.pk = issued.token.pk
        messages.warning(request, f"Copy this token now, it is not shown again: {issued.raw}")

    @admin.action(description="Revoke the selected tokens (effective immediately)")
    def revoke(self, request, queryset):
        for token in queryset:
            api_token_revoke(token=token)
        messages.success(request, f"revoked {queryset.count()} token(s)")


# Beat schedules are shown, never edited, in the admin: the web's database role may not write them
# (a compromised web process must not schedule work); `manage.py setup_schedules` on the host does.
for _model in (
    beat_models.PeriodicTask,
    beat_models.IntervalSchedule,
    beat_models.CrontabSchedule,
    beat_models.SolarSchedule,
    beat_models.ClockedSchedule,
):
    if admin.site.is_registered(_model):
        _base = type(admin.site._registry[_model])
        admin.site.unregister(_model)
        admin.site.register(_model, type(f"Shown{_base.__name__}", (ShownOnly, _base), {}))
