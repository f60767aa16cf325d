"""Where the API server is and how to prove who we are: a kubeconfig, or in-cluster.

As kubectl finds it: `$KUBECONFIG` (the first file of a colon-separated list that names a
context), else `~/.kube/config`, else the Pod's ServiceAccount. Credentials: client
certificates (files or inline data), a bearer token (inline, `tokenFile`, or the
ServiceAccount's, re-read as kubelet rotates it), basic auth, or an exec plugin
(client.authentication.k8s.io ExecCredential, token kind, cached until it expires).
Standard library and PyYAML only: the agent's client stays small.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import json
import os
import shutil
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0


class ConfigError(Exception):
    """No usable configuration: says what is missing."""


@dataclass
class Credentials:
    """The Authorization header to send, refreshed when it may have changed."""

    token: str | None = None
    token_file: Path | None = None
    basic: tuple[str, str] | None = None
    exec_spec: dict[str, Any] | None = None
    base_dir: Path = Path(".")
    _read_at: float = field(default=0.0, init=False)
    _expires_at: float | None = field(default=None, init=False)

    async def headers(self) -> dict[str, str]:
        if self.exec_spec is not None:
            if self.token is None or (self._expires_at and time.time() >= self._expires_at - 10):
                await self._run_exec()
        elif self.token_file is not None and (
            self.token is None or time.monotonic() - self._read_at > TOKEN_REREAD_SECONDS
        ):
            self.token = self.token_file.read_text().strip()
            self._read_at = time.monotonic()
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.basic:
            raw = base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        return {}

    def refreshable(self) -> bool:
        return self.exec_spec is not None or self.token_file is not None

    def invalidate(self) -> None:
        """After a 401: read the token again (it may have rotated) or run the plugin."""
        if self.refreshable():
            self.token = None

    async def _run_exec(self) -> None:
        spec = self.exec_spec or {}
        command = str(spec.get("command", ""))
        if "/" in command and not os.path.isabs(command):
            command = str(self.base_dir / command)
        env = {**os.environ, **{e["name"]: e["value"] for e in spec.get("env") or []}}
        info = {
            "apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"),
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
        process = await asyncio.create_subprocess_exec(
            command,
            *[str(a) for a in spec.get("args") or []],
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode:
            raise ConfigError(f"exec plugin {command} failed: {err.decode()[-500:]}")
        status = json.loads(out).get("status") or {}
        if not status.get("token"):
            raise ConfigError(f"exec plugin {command} gave no token (client certificates "
                              "from exec plugins are not supported)")  # fmt: skip
        self.token = str(status["token"])
        expiry = status.get("expirationTimestamp")
        self._expires_at = (
            datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp() if expiry else None
        )


@dataclass
class ClusterConfig:
    server: str
    ssl: ssl.SSLContext | None
    credentials: Credentials
    namespace: str | None = None
    source: str = ""  # the file it came from, or "in-cluster"


_SCRATCH: list[str] = []


def _scratch_file(data: bytes) -> str:
    """Inline certificate data as a private file (the ssl module loads chains from files)."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="workgate-kube-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    fd, path = tempfile.mkstemp(dir=_SCRATCH[0])
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


def _named(items: list[dict[str, Any]] | None, name: str, what: str) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            return dict(item.get(what) or {})
    raise ConfigError(f"kubeconfig has no {what} named {name!r}")


def _ssl_context(cluster: dict[str, Any], user: dict[str, Any], base: Path) -> ssl.SSLContext:
    def path_or_data(key: str) -> str | None:
        raw = user.get(f"{key}-data") or cluster.get(f"{key}-data")
        if raw:
            return _scratch_file(base64.b64decode(str(raw)))
        value = user.get(key) or cluster.get(key)
        return str(base / value) if value else None

    context = ssl.create_default_context(cafile=path_or_data("certificate-authority"))
    if cluster.get("insecure-skip-tls-verify"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert, key = path_or_data("client-certificate"), path_or_data("client-key")
    if cert and key:
        context.load_cert_chain(cert, key)
    return context


def from_file(path: str | Path, context: str | None = None) -> ClusterConfig:
    path = Path(path).expanduser()
    doc = yaml.safe_load(path.read_text()) or {}
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError(f"{path} has no current-context")
    ctx = _named(doc.get("contexts"), name, "context")
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster")), "cluster")
    user = _named(doc.get("users"), str(ctx.get("user")), "user") if ctx.get("user") else {}
    base = path.parent
    server = str(cluster.get("server") or "")
    if not server:
        raise ConfigError(f"{path}: cluster {ctx.get('cluster')!r} has no server")
    credentials = Credentials(
        token=user.get("token"),
        token_file=base / user["tokenFile"] if user.get("tokenFile") else None,
        basic=(user["username"], user.get("password", "")) if user.get("username") else None,
        exec_spec=user.get("exec"),
        base_dir=base,
    )
    context_ssl = _ssl_context(cluster, user, base) if server.startswith("https:") else None
    return ClusterConfig(server, context_ssl, credentials, ctx.get("namespace"), str(path))


def in_cluster() -> ClusterConfig:
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
    )
    if not host or not (SERVICE_ACCOUNT / "token").exists():
        raise ConfigError("no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a Pod")
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    namespace_file = SERVICE_ACCOUNT / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else None
    credentials = Credentials(token_file=SERVICE_ACCOUNT / "token")
    return ClusterConfig(server, context, credentials, namespace, "in-cluster")


def load_config(path: str | Path | None = None) -> ClusterConfig:
    """`path`, else the first of $KUBECONFIG's files that exists, else ~/.kube/config,
    else in-cluster."""
    if path is not None:
        return from_file(path)
    candidates = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    candidates.append(str(Path.home() / ".kube" / "config"))
    for candidate in candidates:
        if Path(candidate).expanduser().exists():
            return from_file(candidate)
    return in_cluster()
