"""Dispatchers run beside the q2 cluster (mailing/engine/runtime/), not as q2 tasks: the
keeper schedule and the slots' enqueue mark go."""

from django.db import migrations

KEEPER_SCHEDULE = "ensure-dispatchers"


def drop_keeper_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=KEEPER_SCHEDULE).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("mailing", "0005_event_actor"),
    ]

    operations = [
        migrations.RunPython(drop_keeper_schedule, migrations.RunPython.noop),
        migrations.RemoveField(model_name="dispatcherslot", name="enqueued_at"),
    ]
