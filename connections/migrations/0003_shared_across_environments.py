from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('connections', '0002_trino_kind'),
    ]

    operations = [
        migrations.AddField(
            model_name='connection',
            name='shared_across_environments',
            field=models.BooleanField(default=False, help_text='One dataset for every environment: writes through it need the prod rule.'),
        ),
    ]
