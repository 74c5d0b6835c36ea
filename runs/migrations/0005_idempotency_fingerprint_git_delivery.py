import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('runs', '0004_partial_claim_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='run',
            name='idempotency_fingerprint',
            field=models.CharField(blank=True, default='', max_length=64),
        ),
        migrations.CreateModel(
            name='GitDelivery',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('delivery_id', models.CharField(max_length=200)),
                ('sha', models.CharField(blank=True, default='', max_length=40)),
                ('received_at', models.DateTimeField(auto_now_add=True)),
                ('status', models.CharField(default='queued', max_length=16)),
                ('result', models.JSONField(blank=True, default=dict)),
                ('source', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='runs.gitsource')),
            ],
            options={
                'ordering': ['-id'],
                'constraints': [models.UniqueConstraint(fields=('source', 'delivery_id'), name='uniq_git_delivery')],
            },
        ),
    ]
