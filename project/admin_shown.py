"""The admin's read-only pages: rows the web's database role may not write (trades, audit events, RPC
endpoints, beat schedules, authority keys) are shown, never offered for editing."""


class ShownOnly:
    """Mixed into a ModelAdmin or inline: no add, change or delete."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
