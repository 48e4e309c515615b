from django.contrib import admin

from apps.watcher.models import BlockHeader, Reorg


@admin.register(BlockHeader)
class BlockHeaderAdmin(admin.ModelAdmin):
    list_display = ("number", "chain", "hash", "canonical", "seen_at", "orphaned_at")
    list_filter = ("chain", "canonical")
    search_fields = ("hash",)
    readonly_fields = [f.name for f in BlockHeader._meta.fields]


@admin.register(Reorg)
class ReorgAdmin(admin.ModelAdmin):
    list_display = (
        "detected_at",
        "chain",
        "fork_number",
        "depth",
        "finality_alarm",
        "reconfirmed_trades",
        "violated_trades",
    )
    list_filter = ("chain", "finality_alarm")
    readonly_fields = [f.name for f in Reorg._meta.fields]
