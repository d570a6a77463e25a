from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("customers", "0002_client_mail_webhook_secrets")]

    operations = [
        migrations.AddField(
            model_name="client",
            name="mail_subaccount",
            field=models.CharField(
                blank=True,
                default="",
                help_text=(
                    "Set by the platform operator only: the ESP sub-account this tenant sends as "
                    "with the platform's parent credential (mail_backend \"mailgun_subaccount\", "
                    "\"sparkpost_subaccount\" or \"amazon_ses_tenant\"). Not a secret."
                ),
                max_length=200,
                verbose_name="mail sub-account",
            ),
        ),
    ]
