"""Network servers authenticated by TLS client certificate: the certificate maps to a NetID."""

from __future__ import annotations

import datetime
import hashlib
import secrets
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jsd.app import build_app
from jsd.registry import NetworkServer
from jsd.serve import _ssl_context
from jsd_sim import SimDevice

HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"


def _cert(name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, ca: bool = False,
          san: str | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    data = cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)
    return path


async def test_client_certificate_maps_to_the_network_server(jsd_server: Any, tmp_path: Path) -> None:
    ca = _cert("test CA", None, ca=True)
    server = _cert("localhost", ca, san="localhost")
    known = _cert("ns-000013", ca)
    stranger = _cert("somebody", ca)
    ca_file = _write(tmp_path / "ca.pem", ca[0])
    settings = jsd_server.settings.replace(
        server__tls_cert=str(_write(tmp_path / "server.pem", server[0], server[1])),
        server__tls_client_ca=str(ca_file),
    )
    kek = secrets.token_bytes(16)
    label = f"ns-tls-{secrets.token_hex(4)}"
    await jsd_server.hsm.import_kek(label, kek)
    fingerprint = hashlib.sha256(known[0].public_bytes(serialization.Encoding.DER)).hexdigest()
    await jsd_server.registry.add_network_server(NetworkServer(
        net_id=bytes.fromhex(HOME), name="tls ns", kek_label=label, token_hash=None,
        cert_fingerprint=fingerprint, answer_url=None, async_mode=False,
    ))
    app_key, astk = secrets.token_bytes(16), secrets.token_bytes(16)
    dev_eui = secrets.token_bytes(8)
    await jsd_server.add_device(dev_eui.hex(), JOIN_EUI, "1.0.3", app_key, None, HOME, astk)
    device = SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), "1.0.3", app_key)

    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=_ssl_context(settings))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async def ask(client_cert: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> dict[str, Any]:
            context = ssl.create_default_context(cafile=str(ca_file))
            cert_file = _write(tmp_path / f"client-{secrets.token_hex(3)}.pem", client_cert[0], client_cert[1])
            context.load_cert_chain(str(cert_file))
            body = {
                "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 5,
                "MessageType": "JoinReq", "MACVersion": "1.0.3", "PHYPayload": device.join_request().hex(),
                "DevEUI": dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
            }
            async with aiohttp.ClientSession() as client:
                async with client.post(f"https://localhost:{port}/", json=body, ssl=context) as response:
                    assert response.status == 200
                    answer: dict[str, Any] = await response.json()
                    return answer

        answer = await ask(known)
        assert answer["Result"]["ResultCode"] == "Success", answer
        assert answer["NwkSKey"]["KEKLabel"] == label
        assert device.accept(bytes.fromhex(answer["PHYPayload"])).join_nonce == 1
        answer = await ask(stranger)
        assert answer["Result"]["ResultCode"] == "UnknownSender"
        assert "client certificate" in answer["Result"]["Description"]
    finally:
        await runner.cleanup()
