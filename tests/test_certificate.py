"""Naming a certificate from its DER bytes: the subject and the issuer, or a plain
'could not be read' for anything else."""

from __future__ import annotations

import ssl

import pytest
import trustme

from proxy.certificate import describe


def der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def test_a_certificate_is_named_by_its_subject_and_issuer() -> None:
    ca = trustme.CA(organization_name="Corporate Proxy CA")
    cert = ca.issue_cert("chatgpt.com", common_name="chatgpt.com", organization_name="Intercept")
    described = describe(der(cert))
    assert described.startswith("subject O=Intercept, OU=Testing cert #")
    assert ", CN=chatgpt.com; issuer O=Corporate Proxy CA, OU=Testing CA #" in described


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\x30\x82\xff\xff", b"\x31\x03\x02\x01\x01", b"\x30\x03\x30\x01\x00"],
    ids=["empty", "text", "truncated", "a set", "too short"],
)
def test_what_is_not_a_certificate_is_said_so(data: bytes) -> None:
    assert describe(data) == "a certificate that could not be read"
