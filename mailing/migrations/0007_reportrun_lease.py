"""The daily report's claim becomes a lease: ``lease_until`` (the claim's start for rows
claimed before, so an unsent one is taken over at once) and ``attempts``."""

from django.db import migrations, models
from django.db.models import F


def lease_from_start(apps, schema_editor):
    apps.get_model("mailing", "ReportRun").objects.update(lease_until=F("started_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("mailing", "0006_dispatchers_beside_q2"),
    ]

    operations = [
        migrations.AddField(
            model_name="reportrun",
            name="lease_until",
            field=models.DateTimeField(null=True),
        ),
        migrations.RunPython(lease_from_start, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="reportrun",
            name="lease_until",
            field=models.DateTimeField(),
        ),
        migrations.AddField(
            model_name="reportrun",
            name="attempts",
            field=models.PositiveIntegerField(default=1),
        ),
    ]
