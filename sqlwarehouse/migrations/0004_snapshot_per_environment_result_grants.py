"""Schema snapshots per (connection, environment); each stored result's blob is granted to the
workspace whose query produced it."""

import django.db.models.deletion
from django.db import migrations, models


def _grants(apps, schema_editor):
    QueryExecution = apps.get_model("sqlwarehouse", "QueryExecution")
    BlobGrant = apps.get_model("artifacts", "BlobGrant")
    pairs = set(QueryExecution.objects.exclude(result=None).values_list("workspace_id", "result_id"))
    for workspace_id, blob_id in pairs:
        BlobGrant.objects.get_or_create(workspace_id=workspace_id, blob_id=blob_id)


class Migration(migrations.Migration):

    dependencies = [
        ('artifacts', '0003_blob_grants_artifact_location'),
        ('controlroom', '0004_workspace_prod_token_expiry_audit_head'),
        ('sqlwarehouse', '0003_execution_heartbeat'),
    ]

    operations = [
        migrations.AlterField(
            model_name='schemasnapshot',
            name='connection',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='schema_snapshots', to='connections.connection'),
        ),
        migrations.AddField(
            model_name='schemasnapshot',
            name='environment',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, to='controlroom.environment'),
        ),
        migrations.AddConstraint(
            model_name='schemasnapshot',
            constraint=models.UniqueConstraint(fields=('connection', 'environment'), name='uniq_schema_snapshot'),
        ),
        migrations.AddConstraint(
            model_name='schemasnapshot',
            constraint=models.UniqueConstraint(condition=models.Q(('environment__isnull', True)), fields=('connection',), name='uniq_schema_snapshot_shared'),
        ),
        migrations.RunPython(_grants, migrations.RunPython.noop),
    ]
