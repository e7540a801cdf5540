"""TLS to the broker from the [mqtt] settings: the broker's certificate checked against tls_ca, and a client
certificate (tls_cert, tls_key) for a broker that requires one. The certificates are made here."""

from __future__ import annotations

import asyncio
import datetime
import getpass
import ipaddress
import secrets
import ssl
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _issue(directory: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
           server: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, key


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_events_over_tls_with_a_client_certificate(
    mosquitto: Any, daemon: Any, tmp_path: Path, prefix: str
) -> None:
    ca = _issue(tmp_path, "ca", None)
    _issue(tmp_path, "broker", ca, server=True)
    _issue(tmp_path, "jsd", ca)
    mosquitto.stop()
    mosquitto.conf = tmp_path / "tls.conf"
    mosquitto.conf.write_text(
        f"listener {mosquitto.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
        f"cafile {tmp_path}/ca.pem\ncertfile {tmp_path}/broker.pem\nkeyfile {tmp_path}/broker.key\n"
        "require_certificate true\n"
    )
    mosquitto.start()
    d = await daemon(
        mqtt__host="127.0.0.1", mqtt__port=mosquitto.port, mqtt__topic_prefix=prefix,
        mqtt__tls_ca=str(tmp_path / "ca.pem"), mqtt__tls_cert=str(tmp_path / "jsd.pem"),
        mqtt__tls_key=str(tmp_path / "jsd.key"),
    )  # fmt: skip
    maker, _ = await d.account("maker", "manufacturer")
    eui = secrets.token_hex(8)
    await d.service.devices.add_device(maker, {"dev_eui": eui, "join_eui": "70b3d57ed0000001", "mac_version": "1.0.4",
                                       "app_key": secrets.token_hex(16)})  # fmt: skip
    await d.drained()

    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    context.load_cert_chain(str(tmp_path / "jsd.pem"), str(tmp_path / "jsd.key"))
    async with asyncio.timeout(10), aiomqtt.Client("127.0.0.1", mosquitto.port, tls_context=context) as client:
        await client.subscribe(f"{prefix}/status", qos=1)
        async for message in client.messages:
            assert message.payload == b"online" and message.retain, "the daemon's retained status, over TLS"
            break
