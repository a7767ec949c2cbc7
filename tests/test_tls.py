"""Optional TLS: `llmos up --tls-cert --tls-key` serves HTTPS (uvicorn's ssl_certfile /
ssl_keyfile), verified against a self-signed certificate for 127.0.0.1 made here."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from llmos.cli.main import build_app
from tests._llama_server import free_port

TOKEN = "tls-test-admin"


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def wait_listening(port: int, cert: Path, timeout: float = 30.0) -> None:
    trusted = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=trusted, timeout=2) as http:
        while True:
            try:
                http.get(f"https://127.0.0.1:{port}/healthz")
                return
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`llmos up` on the mock device over TLS, in its own process; stopped after."""
    cert, key = self_signed(tmp_path)
    port = free_port()
    argv = [sys.executable, "-c", "from llmos.cli.main import main; main()", "up"]
    argv += ["--device", "mock", "--port", str(port), "--home", str(tmp_path / "home")]
    argv += ["--tls-cert", str(cert), "--tls-key", str(key)]
    env = {**os.environ, "LLMOS_TOKEN": TOKEN}
    env.pop("LLMOS_KEY", None)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # the banner names the URL once the server is up
            if "ready at" in line:
                assert f"ready at https://127.0.0.1:{port}" in line, line
                break
            assert time.monotonic() < deadline
        else:
            pytest.fail(f"llmos up exited early with status {proc.wait()}")
        wait_listening(port, cert)  # the banner comes at startup, just before the bind
        yield port, cert
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_https_with_the_certificate_and_not_plain_http(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    trusted = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=trusted, timeout=10) as http:
        assert http.get(f"https://127.0.0.1:{port}/healthz").json()["status"] == "ok"
        r = http.get(
            f"https://127.0.0.1:{port}/v1/sys/info", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 200 and r.json()["models"]
    with pytest.raises(httpx.TransportError):  # plain HTTP to a TLS port: no answer
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the cert
        httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=10)


@pytest.mark.parametrize(
    ("which", "param_text"),
    [("cert", "give both a TLS certificate and its key"), ("missing", "tls_cert file not found")],
)
def test_up_refuses_half_or_missing_tls_settings(
    tmp_path: Path, which: str, param_text: str
) -> None:
    cert, key = self_signed(tmp_path)
    if which == "cert":
        args = ["--tls-cert", str(cert)]
    else:
        args = ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key)]
    result = CliRunner().invoke(
        build_app(), ["up", "--device", "mock", "--home", str(tmp_path / "h"), *args]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and param_text in result.stderr
    assert "Traceback" not in result.output
