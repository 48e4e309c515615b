from django.db import migrations, models

# Existing trades: the head is the hash of their newest event.
FILL = """
UPDATE trades_trade AS t SET audit_head = e.hash
FROM (SELECT DISTINCT ON (trade_id) trade_id, hash FROM trades_tradeevent ORDER BY trade_id, id DESC) AS e
WHERE e.trade_id = t.id
"""


class Migration(migrations.Migration):
    dependencies = [("trades", "0004_trade_native")]

    operations = [
        migrations.AddField(
            model_name="trade",
            name="audit_head",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.RunSQL(FILL, migrations.RunSQL.noop),
    ]
