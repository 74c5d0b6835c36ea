"""Seal the head of every audit chain that has events but no head yet, with the same HMAC that
``audit_record`` uses, so deleting the newest events of an existing chain is detected from now on.

A head that already exists is never overwritten: resealing it here would hide a cut made before."""

from django.db import migrations
from django.utils import timezone


def _seal(apps, schema_editor):
    from controlroom.audit import chain_name, head_mac  # the key comes from settings, not the schema

    AuditEvent = apps.get_model("controlroom", "AuditEvent")
    AuditHead = apps.get_model("controlroom", "AuditHead")
    workspace_ids = AuditEvent.objects.filter(seq__gt=0).order_by().values_list("workspace_id", flat=True).distinct()
    for workspace_id in list(workspace_ids):
        chain = chain_name(workspace_id)
        if AuditHead.objects.filter(chain=chain).exists():
            continue
        last = AuditEvent.objects.filter(workspace_id=workspace_id, seq__gt=0).order_by("-seq", "-id").first()
        AuditHead.objects.create(chain=chain, seq=last.seq, hash=last.hash,
                                 mac=head_mac(chain, last.seq, last.hash), updated_at=timezone.now())


class Migration(migrations.Migration):

    dependencies = [
        ('controlroom', '0005_cache_table'),
    ]

    operations = [
        migrations.RunPython(_seal, migrations.RunPython.noop),
    ]
