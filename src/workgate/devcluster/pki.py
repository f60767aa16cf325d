"""Certificates and kubeconfigs of the embedded control plane: its own CA, one key pair per
component, generated once per state directory and kept (old kubeconfigs stay valid)."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICE_CIDR = "10.96.0.0/16"


@dataclass(frozen=True)
class Pki:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")

    @property
    def ca_key(self) -> Path:
        return self.path("ca.key")

    def cert(self, name: str) -> Path:
        return self.path(f"{name}.crt")

    def key(self, name: str) -> Path:
        return self.path(f"{name}.key")

    @property
    def sa_key(self) -> Path:
        return self.path("sa.key")

    @property
    def sa_pub(self) -> Path:
        return self.path("sa.pub")

    def ensure(self, service_cidr: str = SERVICE_CIDR) -> None:
        """Generate everything once; reusing it keeps old kubeconfigs and tokens valid."""
        names = ("ca", "apiserver", "admin", "controller-manager", "controller-manager-serving")
        wanted = [self.cert(n) for n in names] + [self.key(n) for n in names]
        if all(p.exists() for p in [*wanted, self.sa_key, self.sa_pub]):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        ca_key = _ec_key()
        ca_name = _name("workgate-dev-ca")
        ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, is_ca=True)
        self._write("ca", ca, ca_key)
        service_ip = ipaddress.ip_network(service_cidr)[1]  # the `kubernetes` Service's IP
        loopback: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        apiserver_names: list[x509.GeneralName] = [
            *loopback,
            x509.IPAddress(service_ip),
            *(
                x509.DNSName(n)
                for n in (
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                )
            ),
        ]
        leaves: list[tuple[str, x509.Name, list[x509.GeneralName] | None]] = [
            ("apiserver", _name("kube-apiserver"), apiserver_names),
            ("admin", _name("workgate-admin", "system:masters"), None),
            ("controller-manager", _name("system:kube-controller-manager"), None),
            ("controller-manager-serving", _name("kube-controller-manager"), loopback),
        ]
        for name, subject, sans in leaves:
            key = _ec_key()
            cert = _certificate(subject, ca_name, key.public_key(), ca_key, server_names=sans)
            self._write(name, cert, key)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(self.sa_key, sa_key)
        self.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _write(self, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(self.key(name), key)


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signing_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    server_names: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate a little clock skew
        .not_valid_after(now + datetime.timedelta(days=3650))  # a dev cluster; never rotated
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(server_names), critical=False
            )
    return builder.sign(signing_key, hashes.SHA256())


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def make_kubeconfig(
    server: str, ca: Path, cert: Path, key: Path, user: str, cluster: str = "workgate-dev"
) -> dict[str, Any]:
    """A self-contained kubeconfig (certificates embedded, so it can be copied around)."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    }
