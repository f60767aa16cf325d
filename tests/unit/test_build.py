"""Pure parts of the embedded control plane: versions, cache paths, CRD rewriting, PKI."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from workgate.devcluster import shipwright
from workgate.devcluster.build import (
    Binaries,
    Versions,
    bin_dir,
    cache_root,
    kubernetes_ldflags,
    module_version,
    pinned_versions,
)
from workgate.devcluster.pki import Pki

GO_MOD = """\
module example.com/x

go 1.26.0

require example.com/single v1.2.3

require (
\tcel.dev/expr v0.25.1 // indirect
\tk8s.io/kubernetes v1.36.3 // indirect
\t// k8s.io/kubernetes v9.9.9 in a comment does not count
)

replace k8s.io/api => k8s.io/api v0.36.3
"""


def test_module_version_reads_block_and_single_line_requires() -> None:
    assert module_version(GO_MOD, "k8s.io/kubernetes") == "v1.36.3"
    assert module_version(GO_MOD, "example.com/single") == "v1.2.3"
    assert module_version(GO_MOD, "cel.dev/expr") == "v0.25.1"


def test_module_version_ignores_replace_and_missing_modules() -> None:
    with pytest.raises(ValueError, match=r"k8s\.io/api"):
        module_version(GO_MOD, "k8s.io/api")


def test_pinned_versions_come_from_the_committed_go_mods() -> None:
    versions = pinned_versions()
    assert versions == Versions(kubernetes="v1.36.3", etcd="v3.6.8")
    assert versions.tag == "k8s-v1.36.3-etcd-v3.6.8"


def test_cache_root_precedence() -> None:
    assert cache_root({"WORKGATE_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"}) == Path("/c")
    assert cache_root({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/workgate")
    assert cache_root({"HOME": "/h"}) == Path("/h/.cache/workgate")
    assert cache_root({"XDG_CACHE_HOME": "", "HOME": "/h"}) == Path("/h/.cache/workgate")


def test_binaries_are_cached_per_version() -> None:
    versions = Versions(kubernetes="v1.36.3", etcd="v3.6.8")
    assert bin_dir(versions, {"HOME": "/h"}) == Path(
        "/h/.cache/workgate/controlplane/k8s-v1.36.3-etcd-v3.6.8/bin"
    )
    assert bin_dir(versions, {"WORKGATE_CACHE_DIR": "/c"}) == Path(
        "/c/controlplane/k8s-v1.36.3-etcd-v3.6.8/bin"
    )


def test_binaries_complete_only_when_all_are_executable(tmp_path: Path) -> None:
    binaries = Binaries.in_dir(tmp_path)
    assert not binaries.complete()
    for path in binaries.all:
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    assert binaries.complete()
    binaries.kubectl.chmod(0o644)
    assert not binaries.complete()


def test_kubernetes_ldflags_stamp_the_version() -> None:
    flags = kubernetes_ldflags("v1.36.3")
    assert "-X k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "gitMajor=1 " in flags and "gitMinor=36 " in flags
    assert flags.startswith("-s -w ") and flags.endswith("gitTreeState=clean")
    with pytest.raises(ValueError):
        kubernetes_ldflags("1.36")


def _crd(*versions: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "builds.shipwright.io"},
        "spec": {
            "conversion": {"strategy": "Webhook", "webhook": {"clientConfig": {}}},
            "versions": [{"name": v, "served": True, "storage": v == "v1alpha1"} for v in versions],
        },
    }


def test_shipwright_crds_serve_only_v1beta1_without_conversion() -> None:
    crd = shipwright.rewrite_crd(_crd("v1alpha1", "v1beta1"))
    assert crd["spec"]["versions"] == [{"name": "v1beta1", "served": True, "storage": True}]
    assert crd["spec"]["conversion"] == {"strategy": "None"}
    with pytest.raises(ValueError, match="no version v1beta1"):
        shipwright.rewrite_crd(_crd("v1alpha1"))


def test_pki_names_and_subjects(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    pki.ensure("10.96.0.0/16")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.cert("apiserver").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("10.96.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert {"localhost", "kubernetes.default.svc"} <= set(sans.get_values_for_type(x509.DNSName))
    assert server.issuer == ca.subject
    admin = x509.load_pem_x509_certificate(pki.cert("admin").read_bytes())
    orgs = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["system:masters"]
    manager = x509.load_pem_x509_certificate(pki.cert("controller-manager").read_bytes())
    assert manager.subject.rfc4514_string() == "CN=system:kube-controller-manager"
    assert (pki.key("admin").stat().st_mode & 0o777) == 0o600
    before = pki.ca_cert.read_bytes()
    pki.ensure()  # kept: existing kubeconfigs and tokens stay valid across restarts
    assert pki.ca_cert.read_bytes() == before
