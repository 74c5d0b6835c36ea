"""Blobs become bytes we hold (no more location on the shared row), visible per workspace
through grants; an artifact kept elsewhere carries its own sha256, size and location."""

import django.db.models.deletion
from django.db import migrations, models


def _forward(apps, schema_editor):
    Artifact = apps.get_model("artifacts", "Artifact")
    Blob = apps.get_model("artifacts", "Blob")
    BlobGrant = apps.get_model("artifacts", "BlobGrant")
    external = set(Blob.objects.exclude(location="").values_list("sha256", flat=True))
    for artifact in Artifact.objects.select_related("blob").iterator(chunk_size=1000):
        blob = artifact.blob
        fields = {"sha256": blob.sha256, "size": blob.size, "location": blob.location}
        if blob.location:
            fields["blob"] = None
        else:
            BlobGrant.objects.get_or_create(workspace_id=artifact.workspace_id, blob_id=blob.sha256)
        Artifact.objects.filter(pk=artifact.pk).update(**fields)
    Blob.objects.filter(sha256__in=external).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('artifacts', '0002_blob_location'),
        ('controlroom', '0004_workspace_prod_token_expiry_audit_head'),
    ]

    operations = [
        migrations.AddField(
            model_name='artifact',
            name='sha256',
            field=models.CharField(db_index=True, default='', max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name='artifact',
            name='size',
            field=models.BigIntegerField(default=0),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name='artifact',
            name='location',
            field=models.CharField(blank=True, default='', max_length=1000),
        ),
        migrations.AlterField(
            model_name='artifact',
            name='blob',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='artifacts', to='artifacts.blob'),
        ),
        migrations.CreateModel(
            name='BlobGrant',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('blob', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='grants', to='artifacts.blob')),
                ('workspace', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='blob_grants', to='controlroom.workspace')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('workspace', 'blob'), name='uniq_blob_grant')],
            },
        ),
        migrations.RunPython(_forward, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name='blob',
            name='location',
        ),
    ]
