"""Test certificates made with the ``openssl`` command (``cryptography`` is not a dependency).

The session fixture ``pki`` holds a test CA, a server certificate for 127.0.0.1 / localhost, a
client certificate, and a rogue CA with a client certificate of its own (one the test CA's
servers must refuse, and a CA that does not verify the test CA's servers). EC P-256 keys,
valid for two days::

    def test_x(pki: Pki) -> None:
        tls = ServerTls(pki.server_crt, pki.server_key, client_ca_file=pki.ca)
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Pki", "make_ca", "make_leaf", "no_ca_bundle_env", "pki"]


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path
    rogue_ca: Path  # a CA that signed none of the above
    rogue_crt: Path  # a client certificate the rogue CA signed
    rogue_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA in ``d``: (certificate, key)."""
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return crt, key


def make_leaf(
    d: Path,
    name: str,
    ca: tuple[Path, Path],
    usage: str,
    san: str = "IP:127.0.0.1,DNS:localhost",
) -> tuple[Path, Path]:
    """A certificate for ``san`` (127.0.0.1 and localhost) signed by ``ca``, with extended key
    usage ``usage`` (``serverAuth`` or ``clientAuth``): (certificate, key)."""
    key, csr, crt, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt", d / f"{name}.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        f"subjectAltName={san}\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext,
    )  # fmt: skip
    return crt, key


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The test certificates, made once per session."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "test-ca")
    rogue_ca = make_ca(d, "rogue-ca")
    server = make_leaf(d, "server", ca, "serverAuth")
    client = make_leaf(d, "client", ca, "clientAuth")
    rogue = make_leaf(d, "rogue", rogue_ca, "clientAuth")
    return Pki(d, ca[0], *server, *client, rogue_ca[0], *rogue)


@pytest.fixture
def no_ca_bundle_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's ``verify``, which
    is where the SDK's HTTP exporter puts ``certificate_file``: without this, a machine with
    those variables set would make the exporter ignore the test CA."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
