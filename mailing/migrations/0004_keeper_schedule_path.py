"""The dispatcher keeper's q2 task moved from mailing.tasks to mailing.engine.runtime.tasks."""

from django.db import migrations

OLD = "mailing.tasks.ensure_dispatchers"
NEW = "mailing.engine.runtime.tasks.ensure_dispatchers"


def forwards(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(func=OLD).update(func=NEW)


def backwards(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(func=NEW).update(func=OLD)


class Migration(migrations.Migration):
    dependencies = [
        ("mailing", "0003_dispatcherslot_send_health"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
