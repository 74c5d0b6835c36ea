from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('runs', '0005_idempotency_fingerprint_git_delivery'),
    ]

    operations = [
        migrations.AddField(
            model_name='gitdelivery',
            name='claimed_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
