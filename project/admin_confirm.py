"""A confirmation page for admin actions that change money-relevant state (revoke, cancel, retry),
shared by every app's admin."""

from __future__ import annotations

from django.template.response import TemplateResponse


def confirmed(request) -> bool:
    return request.POST.get("confirmed") == "yes"


def confirmation_page(modeladmin, request, queryset, *, action: str, question: str, verb: str):
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Are you sure?",
        "question": question,
        "queryset": queryset,
        "action": action,
        "verb": verb,
        "opts": modeladmin.model._meta,
    }
    return TemplateResponse(request, "admin/custos_confirm_action.html", context)
