# Dev chain epochs: a restarted Hardhat node is a new chain (apps/chain/devchain.py: dev_chain_epoch).

import django.contrib.postgres.fields
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chain", "0002_chain_settlement_quorum_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="chain",
            name="anchor_block_hash",
            field=models.CharField(blank=True, default="", max_length=66),
        ),
        migrations.AddField(
            model_name="chain",
            name="anchor_block_number",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="chain",
            name="epoch",
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddField(
            model_name="chain",
            name="epoch_started_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="ChainEpoch",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.PositiveIntegerField(help_text="the epoch this started")),
                ("started_at", models.DateTimeField()),
                ("reason", models.CharField(max_length=500)),
                ("archived_headers", models.PositiveIntegerField(default=0)),
                (
                    "archived_trades",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.BigIntegerField(), blank=True, default=list, size=None
                    ),
                ),
                ("archive", models.JSONField(blank=True, default=dict)),
                ("completed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "chain",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="epochs", to="chain.chain"
                    ),
                ),
            ],
            options={
                "ordering": ["chain_id", "number"],
                "constraints": [
                    models.UniqueConstraint(fields=("chain", "number"), name="chainepoch_unique_number")
                ],
            },
        ),
    ]
