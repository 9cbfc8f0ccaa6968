"""The TLS client files of an OTLP connection: what they are, and whether they can serve.

:func:`tls_file_problems` is the one check of PEM files in the package: the ``otlp:`` config
reader runs it at load on the files a config names, the resolver on the files the environment
names, and the sidecar's receiver on its server certificate, key and client CA.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["TLS_FIELDS", "OtlpTls", "tls_file_problems"]

TLS_FIELDS: tuple[str, ...] = ("certificate_file", "client_certificate_file", "client_key_file")
"""The ``otlp:`` keys of the TLS client files."""


@dataclass(frozen=True, slots=True)
class OtlpTls:
    """The TLS client files of one OTLP connection, resolved and read once. All ``None``: the
    system's roots and no client certificate.

    Attributes:
        certificate_file: the CA bundle's path; ``root_certificates`` its PEM.
        client_certificate_file: the client certificate's path; ``certificate_chain`` its PEM.
        client_key_file: the client key's path; ``private_key`` its PEM.
    """

    certificate_file: str | None = None
    client_certificate_file: str | None = None
    client_key_file: str | None = None
    root_certificates: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)


def tls_file_problems(files: Mapping[str, str]) -> list[tuple[str, str]]:
    """(field, message) for each TLS file that cannot serve.

    Args:
        files: field -> path, with any of the fields ``certificate_file`` (a PEM CA bundle),
            ``client_certificate_file`` and ``client_key_file`` (a PEM certificate and its
            unencrypted key; checked as a pair when both are given).

    Returns:
        One entry per file that cannot be read, a CA bundle with no PEM certificate, and a
        certificate and key that are not a matching PEM pair (reported on the key). Empty when
        every file can serve.
    """
    out: list[tuple[str, str]] = []
    for key, path in files.items():
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            out.append((key, f"cannot read {path!r}: {exc.strerror or exc}"))
    if out:
        return out
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if "certificate_file" in files:
        try:
            context.load_verify_locations(cafile=files["certificate_file"])
        except (ssl.SSLError, ValueError):
            out.append(("certificate_file", f"no PEM certificate in {files['certificate_file']!r}"))
    cert, private = files.get("client_certificate_file"), files.get("client_key_file")
    if cert is not None and private is not None:
        try:
            # A callable password: an encrypted key fails here instead of prompting on a tty.
            context.load_cert_chain(cert, private, password=lambda: b"")
        except (ssl.SSLError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            out.append(
                (
                    "client_key_file",
                    f"{cert!r} and {private!r} are not a PEM certificate and its unencrypted "
                    f"private key ({reason})",
                )
            )
    return out
