"""The database cache table (embedded mode keeps login rate limits there, shared by every
process); nothing when the configured caches are not database caches."""

from django.core.management import call_command
from django.db import migrations


def _create(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):

    dependencies = [
        ('controlroom', '0004_workspace_prod_token_expiry_audit_head'),
    ]

    operations = [
        migrations.RunPython(_create, migrations.RunPython.noop),
    ]
