"""Prod trigger setting, token expiry, and an audit log whose chain positions and actors are
kept as recorded (the actor's id is a plain number now, so deleting a user changes no hash)."""

from django.db import migrations, models


def _backfill(apps, schema_editor):
    AuditEvent = apps.get_model("controlroom", "AuditEvent")
    chains: dict = {}
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=1000):
        chains[event.workspace_id] = chains.get(event.workspace_id, 0) + 1
        AuditEvent.objects.filter(pk=event.pk).update(seq=chains[event.workspace_id], actor_user_id=event.actor_id)


class Migration(migrations.Migration):

    dependencies = [
        ('controlroom', '0003_workspace_sql_limits'),
    ]

    operations = [
        migrations.AddField(
            model_name='workspace',
            name='operators_run_in_prod',
            field=models.BooleanField(default=False, help_text='Let operators trigger runs in prod (by default only admins may).'),
        ),
        migrations.AddField(
            model_name='apitoken',
            name='expires_at',
            field=models.DateTimeField(blank=True, help_text='Empty: the token does not expire.', null=True),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='seq',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='actor_user_id',
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(_backfill, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name='auditevent',
            name='actor',
        ),
        migrations.CreateModel(
            name='AuditHead',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('chain', models.CharField(max_length=32, unique=True)),
                ('seq', models.PositiveBigIntegerField()),
                ('hash', models.CharField(max_length=64)),
                ('mac', models.CharField(max_length=64)),
                ('updated_at', models.DateTimeField()),
            ],
        ),
    ]
