"""FakeESP's SparkPost and SES v2 endpoints: they refuse a wrong credential like the real ones."""

from __future__ import annotations

import pytest
from anymail.backends.amazon_ses import EmailBackend as SESBackend
from anymail.backends.sparkpost import EmailBackend as SparkPostBackend
from anymail.exceptions import AnymailAPIError
from django.core.mail import EmailMessage

from tenantmail.testing import FakeESP


def message() -> EmailMessage:
    msg = EmailMessage("s", "b", "a@x.example", ["c@example.com"], cc=["d@example.com"])
    msg.metadata = {"k": "v"}  # type: ignore[attr-defined]
    return msg


def ses(esp: FakeESP, key_id: str) -> SESBackend:
    return SESBackend(
        session_params={
            "aws_access_key_id": key_id,
            "aws_secret_access_key": "secret-0000000000000000",
            "region_name": "eu-west-1",
        },
        client_params={"endpoint_url": esp.amazon_ses_endpoint_url},
    )


def test_fake_sparkpost_and_ses_check_the_credential() -> None:
    with FakeESP(valid_credentials={"sp-good-000000000000", "AKIAGOOD000000000000"}) as esp:
        SparkPostBackend(
            api_key="sp-good-000000000000", api_url=esp.sparkpost_api_url
        ).send_messages([message()])
        ses(esp, "AKIAGOOD000000000000").send_messages([message()])
        spark, aws = esp.wait_for(2)
        assert (spark.esp, spark.to, spark.metadata, spark.on_behalf_of) == (
            "sparkpost",
            ["c@example.com", "d@example.com"],
            {"k": "v"},
            None,
        )
        assert (aws.esp, aws.credential, aws.to, aws.metadata, aws.subject) == (
            "amazon_ses",
            "AKIAGOOD000000000000",
            ["c@example.com", "d@example.com"],
            {"k": "v"},
            "s",
        )
        with pytest.raises(AnymailAPIError):
            SparkPostBackend(api_key="sp-bad", api_url=esp.sparkpost_api_url).send_messages(
                [message()]
            )
        with pytest.raises(AnymailAPIError):
            ses(esp, "AKIABAD0000000000000").send_messages([message()])
        assert esp.rejected == [("sparkpost", 401), ("amazon_ses", 403)]
        assert len(esp.messages) == 2
