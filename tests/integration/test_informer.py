"""The informer's paged list against the real API server: pages of a small size, the watch
going on from the paged list's version, a re-list reporting what vanished across pages,
and a continue token answered 410 Gone. Kubernetes 1.36 serves continue pages from the
watch cache's snapshots and answers even a token whose revision etcd has compacted away,
so that last test runs on a private plane whose API server lists from etcd."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from workgate.devcluster.build import Binaries
from workgate.devcluster.controlplane import LocalControlPlane
from workgate.k8s.api import NAMESPACES, Body, KubeApi, ResourceRef, load_config
from workgate.k8s.informer import Informer

CONFIGMAPS = ResourceRef("", "v1", "configmaps")
COUNT, PAGE = 25, 10  # three pages
MINE = {"labelSelector": "test=informer"}  # not the namespace's kube-root-ca.crt


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []  # (type, name, uid)
        self.changed = asyncio.Event()

    def __call__(self, type_: str, body: Body) -> None:
        meta = body["metadata"]
        self.seen.append((type_, meta["name"], meta["uid"]))
        self.changed.set()

    async def wait(self, what: Any, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not what():
                self.changed.clear()
                await self.changed.wait()


async def config_maps(api: KubeApi, namespace: str, names: list[str]) -> dict[str, str]:
    """Create them; their uids by name."""
    uids = {}
    for name in names:
        body = await api.create(
            CONFIGMAPS.path(namespace), {"metadata": {"name": name, "labels": {"test": "informer"}}}
        )
        uids[name] = body["metadata"]["uid"]
    return uids


async def test_a_paged_list_delivers_every_page_and_a_relist_reports_what_vanished(
    api: KubeApi, namespace: str
) -> None:
    names = [f"cm-{i:02d}" for i in range(COUNT)]
    uids = await config_maps(api, namespace, names)
    events = Events()
    informer = Informer(api, CONFIGMAPS.path(namespace), events, params=MINE, page_size=PAGE)
    watching = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        assert informer.pages == 3 and informer.lists == 1
        assert sorted(events.seen) == sorted(("ADDED", n, uids[n]) for n in names)
        # the watch goes on from the paged list's resourceVersion
        late = await config_maps(api, namespace, ["late"])
        await events.wait(lambda: ("ADDED", "late", late["late"]) in events.seen)
    finally:
        watching.cancel()
    # while nothing watches: one gone from the first page, one from the last, one
    # replaced (a new uid under its name), one new
    for name in ("cm-03", "cm-12", "cm-24"):
        await api.request("DELETE", CONFIGMAPS.path(namespace, name))
    fresh = await config_maps(api, namespace, ["cm-12", "new"])
    events.seen.clear()
    await informer._list()
    assert informer.pages == 6 and informer.lists == 2
    deleted = [e for e in events.seen if e[0] == "DELETED"]
    assert sorted(deleted) == sorted(
        [("DELETED", "cm-03", uids["cm-03"]), ("DELETED", "cm-12", uids["cm-12"]),
         ("DELETED", "cm-24", uids["cm-24"])])  # fmt: skip
    assert events.seen[-2:] == [("DELETED", "cm-03", uids["cm-03"]),
                                ("DELETED", "cm-24", uids["cm-24"])]  # fmt: skip
    kept = [n for n in names if n not in ("cm-03", "cm-12", "cm-24")] + ["late"]
    assert sorted(e for e in events.seen if e[0] != "DELETED") == sorted(
        [("MODIFIED", n, uids.get(n) or late[n]) for n in kept]
        + [("ADDED", "cm-12", fresh["cm-12"]), ("ADDED", "new", fresh["new"])]
    )


def compact_etcd(port: int) -> int:
    """Write a key straight into etcd (its HTTP gateway) and compact its history up to that
    revision: every continue token of an older list is then too old."""

    def post(path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    key, value = (base64.b64encode(text).decode() for text in (b"/test/compact", b"x"))
    revision = int(post("/v3/kv/put", {"key": key, "value": value})["header"]["revision"])
    post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
    return revision


async def test_a_continue_token_too_old_starts_the_list_over(
    control_plane_binaries: Binaries, tmp_path: Path
) -> None:
    """etcd compacted while the first page is handed over: a later page's continue token
    is answered 410 Gone. The informer lists again from the start, and ends with every
    object added once (those of the pages before the 410 are MODIFIED on the new list)
    and none reported deleted."""
    plane = LocalControlPlane(
        "informer-410",
        state_dir=tmp_path / "plane",
        binaries=control_plane_binaries,
        progress=lambda _: None,
        bare=True,
        apiserver_args=("--watch-cache=false",),  # lists (and their pages) from etcd
    )
    await asyncio.to_thread(plane.start)
    try:
        assert plane.ports is not None
        etcd_port = plane.ports.etcd_client
        async with KubeApi(load_config(plane.kubeconfig_path)) as api:
            namespace = "informer-410"
            await api.create(NAMESPACES.path(), {"metadata": {"name": namespace}})
            names = [f"cm-{i:02d}" for i in range(COUNT)]
            uids = await config_maps(api, namespace, names)
            events, compacted = Events(), []

            def on_event(type_: str, body: Body) -> None:
                if not compacted:  # the first page is being handed over
                    compacted.append(compact_etcd(etcd_port))
                events(type_, body)

            informer = Informer(api, CONFIGMAPS.path(namespace), on_event, params=MINE, page_size=5)
            await asyncio.wait_for(informer._list(), 60)
    finally:
        await asyncio.to_thread(plane.stop)
    assert compacted, "nothing was listed"
    assert informer.restarted_lists == 1 and informer.lists == 1, vars(informer)
    added = [(name, uid) for type_, name, uid in events.seen if type_ == "ADDED"]
    assert sorted(added) == sorted(uids.items()), events.seen  # each once, its own uid
    assert {type_ for type_, _, _ in events.seen} <= {"ADDED", "MODIFIED"}, events.seen


CRDS = ResourceRef("apiextensions.k8s.io", "v1", "customresourcedefinitions")


async def test_a_collection_served_late_is_listed_within_seconds(
    api: KubeApi, namespace: str
) -> None:
    """A collection not served yet (its CRD applied after the operator started, or being
    re-applied) is looked at again after 1 s, then less often: listed within seconds of
    being served, not after a fixed 30 s."""
    group = f"t{uuid.uuid4().hex[:8]}.informer.workgate.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"things.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }
    things = ResourceRef(group, "v1", "things")
    informer = Informer(api, things.path(namespace), Events())
    watching = asyncio.create_task(informer.run())
    try:
        async with asyncio.timeout(10):  # its first look finds nothing served
            while not informer._absent:  # noqa: ASYNC110 (bounded polling of a plain flag)
                await asyncio.sleep(0.05)
        await api.create(CRDS.path(), crd)
        # a fixed 30 s wait between looks would miss this bound
        await asyncio.wait_for(informer.synced.wait(), 20)
        assert informer.pages == 1  # listed once it was served
    finally:
        watching.cancel()
        await api.request("DELETE", CRDS.path(None, crd["metadata"]["name"]))
