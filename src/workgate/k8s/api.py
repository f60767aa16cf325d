"""The one async Kubernetes client of workgate: JSON over HTTPS, dicts in and out.

Credentials come from k8s/kubeconfig.py (a kubeconfig or in-cluster: client certificates,
tokens, token files, exec plugins, basic auth); requests go through a transport
(k8s/transport.py): aiohttp in the operator, where Kopf runs on it anyway, or a small
HTTP/1.1 client (k8s/http11.py, llhttp parsing) in the agent, which has no other use for
aiohttp. Everything above this module speaks plain dicts, so the adapters can state
preconditions (resourceVersion, uid) and content types exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from workgate import __version__
from workgate.k8s.kubeconfig import ClusterConfig, load_config
from workgate.k8s.transport import TRANSIENT_ERRORS, Reply, Transport, TransportName, make_transport

Body = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "workgate"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """A lost race: optimistic-concurrency conflict or the object already exists."""
        return self.status == 409

    @property
    def gone(self) -> bool:
        """A watch's resourceVersion is too old: list again."""
        return self.status == 410

    @property
    def namespace_terminating(self) -> bool:
        """A create in a namespace that is being deleted (it passes, or comes back)."""
        return self.status == 403 and "being terminated" in self.message

    @property
    def expected(self) -> bool:
        """An answer a controller meets in normal operation (the object went, a race was
        lost, its namespace is going): worth one log line and a retry, not a traceback."""
        return self.not_found or self.conflict or self.namespace_terminating


def is_transient(exc: BaseException) -> bool:
    """Worth retrying as it is: the API server was unreachable, slow, overloaded or
    restarting (5xx, 429, timeouts, refused or dropped connections)."""
    if isinstance(exc, ApiError):
        return exc.status >= 500 or exc.status == 429
    return isinstance(exc, tuple(TRANSIENT_ERRORS))


@dataclass(frozen=True)
class ResourceRef:
    group: str
    version: str
    plural: str

    def path(
        self, namespace: str | None = None, name: str | None = None, sub: str | None = None
    ) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        if sub is not None:
            base += f"/{sub}"
        return base


LEASES = ResourceRef("coordination.k8s.io", "v1", "leases")
EVENTS = ResourceRef("", "v1", "events")
SECRETS = ResourceRef("", "v1", "secrets")
NAMESPACES = ResourceRef("", "v1", "namespaces")
BUILDS = ResourceRef("shipwright.io", "v1beta1", "builds")
BUILDRUNS = ResourceRef("shipwright.io", "v1beta1", "buildruns")
WORKORDERS = ResourceRef("workgate.io", "v1alpha1", "workorders")
WAITPOINTS = ResourceRef("workgate.io", "v1alpha1", "waitpoints")
SIGNALS = ResourceRef("workgate.io", "v1alpha1", "signals")
SUBJECT_ACCESS_REVIEWS = ResourceRef("authorization.k8s.io", "v1", "subjectaccessreviews")


__all__ = ["ClusterConfig", "load_config"]


class _Response:
    """What a request brought back, read in full."""

    def __init__(self, reply: Reply) -> None:
        self.status, self.reason, self.content = reply.status, reply.reason, reply.content

    def json(self) -> Any:
        return orjson.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def _target(path: str, params: dict[str, str] | None) -> str:
    return f"{path}?{urlencode(params)}" if params else path


class KubeApi:
    """`transport`: "aiohttp" (the default) or "http11" (what the agent process uses).
    `client`: who is asking, sent as the User-Agent's product (`workgate-operator/0.1.0`);
    the API server names the field manager of a write that names none after it, so
    `managedFields` say which part of workgate wrote what (not "Python")."""

    def __init__(
        self,
        config: ClusterConfig | None = None,
        *,
        timeout: float = 30.0,
        transport: TransportName = "aiohttp",
        client: str = FIELD_MANAGER,
    ) -> None:
        self.config = config or load_config()
        self._credentials = self.config.credentials
        self.client = client
        self._user_agent = {"User-Agent": f"{client}/{__version__}"}
        self._timeout = timeout
        self._transport: Transport = make_transport(transport, self.config.server, self.config.ssl)
        self._plurals: dict[tuple[str, str], str] = {}

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def default_namespace(self) -> str:
        return self.config.namespace or "default"

    def _retry_unauthorized(self, status: int, attempt: int) -> bool:
        """After a 401: a rotated token (or an expired plugin's)? Then fetch it again."""
        if status != 401 or attempt == 2 or not self._credentials.refreshable():
            return False
        self._credentials.invalidate()
        return True

    async def _send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> _Response:
        """Send one request (again, when the credentials' flow asks: a rotated token)."""
        target = _target(path, params)
        for attempt in (1, 2):
            sent = {**(headers or {}), **self._user_agent, **await self._credentials.headers()}
            reply = await self._transport.send(method, target, sent, content, self._timeout)
            if not self._retry_unauthorized(reply.status, attempt):
                return _Response(reply)
        raise AssertionError("unreachable")

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Body:
        content = None if body is None else orjson.dumps(body)
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = content_type
        response = await self._send(method, path, content=content, params=params, headers=headers)
        if response.status >= 400:
            try:
                status = response.json()
            except ValueError:
                status = {}
            if not isinstance(status, dict):
                status = {}
            raise ApiError(
                response.status,
                str(status.get("reason") or response.reason),
                str(status.get("message") or response.text[:500]),
            )
        if not response.content:
            return {}
        result: Body = response.json()
        return result

    async def get_text(self, path: str) -> str:
        """A plain-text endpoint, such as the API server's /metrics."""
        response = await self._send("GET", path)
        if response.status >= 400:
            raise ApiError(response.status, response.reason, response.text[:500])
        return response.text

    async def get(self, path: str, params: dict[str, str] | None = None) -> Body:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: Body) -> Body:
        return await self.request("POST", path, body=body)

    async def merge_patch(self, path: str, patch: Body) -> Body:
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def apply(self, path: str, body: Body, *, field_manager: str | None = None) -> Body:
        # JSON is YAML, so a JSON body is a valid apply patch.
        return await self.request(
            "PATCH",
            path,
            body=body,
            params={"fieldManager": field_manager or self.client, "force": "true"},
            content_type=APPLY_PATCH,
        )

    async def delete(
        self, path: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> None:
        preconditions = {
            k: v for k, v in {"uid": uid, "resourceVersion": resource_version}.items() if v
        }
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": preconditions}
        await self.request("DELETE", path, body=body if preconditions else None)

    async def delete_if(self, path: str, uid: str, resource_version: str | None = None) -> bool:
        """Delete the object at `path` only if it is still `uid` (and that version): True
        once it is gone (by us or before us), False if it changed meanwhile."""
        try:
            await self.delete(path, uid=uid, resource_version=resource_version)
        except ApiError as exc:
            if exc.not_found:
                return True
            if exc.conflict:
                return False
            raise
        return True

    async def watch(
        self, path: str, *, params: dict[str, str] | None = None, timeout_seconds: int = 300
    ) -> AsyncIterator[tuple[str, Body]]:
        """Stream (type, object) watch events for a collection path."""
        query = {**(params or {}), "watch": "1", "timeoutSeconds": str(timeout_seconds)}
        target = _target(path, query)
        for attempt in (1, 2):
            sent = {
                "Accept": "application/json",
                **self._user_agent,
                **await self._credentials.headers(),
            }
            async with self._transport.stream(
                "GET", target, sent, connect_timeout=10, read_timeout=timeout_seconds + 10
            ) as response:
                if self._retry_unauthorized(response.status, attempt):
                    continue
                if response.status >= 400:
                    text = (await response.read()).decode("utf-8", "replace")
                    raise ApiError(response.status, response.reason, text[:500])
                buffer = b""
                async for chunk in response.chunks():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield _watch_event(orjson.loads(line))
                if buffer.strip():
                    yield _watch_event(orjson.loads(buffer))
                return

    async def resource_for(self, api_version: str, kind: str) -> ResourceRef:
        """Find the plural of `kind` through discovery (cached)."""
        key = (api_version, kind)
        if key not in self._plurals:
            group, _, version = api_version.rpartition("/")
            discovery = await self.get(f"/apis/{api_version}" if group else f"/api/{version}")
            for resource in discovery.get("resources", []):
                if resource.get("kind") == kind and "/" not in resource.get("name", ""):
                    self._plurals[key] = resource["name"]
                    break
            else:
                raise ApiError(
                    404, "NotFound", f"the server does not serve {kind} in {api_version}"
                )
        group, _, version = api_version.rpartition("/")
        return ResourceRef(group, version, self._plurals[key])


def _watch_event(event: Body) -> tuple[str, Body]:
    if event["type"] == "ERROR":
        status = event["object"]
        raise ApiError(
            int(status.get("code") or 500),
            str(status.get("reason") or "Error"),
            str(status.get("message") or ""),
        )
    return event["type"], event["object"]
