"""Mailings get a name (existing ones are called "Mailing <id>") and a draft status."""

from django.db import migrations, models
from django.db.models import Value
from django.db.models.functions import Cast, Concat


def name_existing_mailings(apps, schema_editor):
    Mailing = apps.get_model("mailing", "Mailing")
    Mailing.objects.filter(name="").update(
        name=Concat(Value("Mailing "), Cast("id", models.CharField()))
    )


class Migration(migrations.Migration):
    dependencies = [
        ("mailing", "0007_reportrun_lease"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="mailing",
            name="mailing_status_valid",
        ),
        migrations.AddField(
            model_name="mailing",
            name="name",
            field=models.CharField(default="", max_length=120),
            preserve_default=False,
        ),
        migrations.RunPython(name_existing_mailings, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="mailing",
            name="status",
            field=models.CharField(
                choices=[
                    ("draft", "Draft"),
                    ("scheduled", "Scheduled"),
                    ("running", "Running"),
                    ("paused", "Paused"),
                    ("finished", "Finished"),
                    ("cancelled", "Cancelled"),
                ],
                default="scheduled",
                max_length=16,
            ),
        ),
        migrations.AddConstraint(
            model_name="mailing",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "status__in",
                        ["draft", "scheduled", "running", "paused", "finished", "cancelled"],
                    )
                ),
                name="mailing_status_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="mailing",
            constraint=models.CheckConstraint(
                condition=~models.Q(name=""), name="mailing_name_not_empty"
            ),
        ),
    ]
