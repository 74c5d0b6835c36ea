from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('runs', '0006_gitdelivery_claimed_at'),
    ]

    operations = [
        migrations.AddField(
            model_name='gitdelivery',
            name='body_sha256',
            field=models.CharField(blank=True, default='', max_length=64),
        ),
        migrations.AddConstraint(
            model_name='gitdelivery',
            constraint=models.UniqueConstraint(condition=models.Q(('body_sha256', ''), _negated=True), fields=('source', 'body_sha256'), name='uniq_git_delivery_body'),
        ),
    ]
