"""The ``deleting`` status of a mailing deleted by staff whose rows go in the background."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('mailing', '0009_fanout_cursor'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='mailing',
            name='mailing_status_valid',
        ),
        migrations.AlterField(
            model_name='mailing',
            name='status',
            field=models.CharField(choices=[('draft', 'Draft'), ('scheduled', 'Scheduled'), ('running', 'Running'), ('paused', 'Paused'), ('finished', 'Finished'), ('cancelled', 'Cancelled'), ('deleting', 'Deleting')], default='scheduled', max_length=16),
        ),
        migrations.AddConstraint(
            model_name='mailing',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['draft', 'scheduled', 'running', 'paused', 'finished', 'cancelled', 'deleting'])), name='mailing_status_valid'),
        ),
    ]
