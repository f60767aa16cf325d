"""A WorkOrder decision's side effects, performed in order: claims, children, waitpoints.

The hands of `operator.workorders` (which observes, decides with the core and writes the
status): each action is one API call, made so that a lost race shows as False (look
again), a refusal of the work itself as ActionFailed, and a child's name held by someone
else's object as NameTakenError (reported, never taken over).
"""

from __future__ import annotations

from workgate.api.common import now_utc
from workgate.core import lifecycle
from workgate.k8s import claims, owners, shipwright, waitpoints
from workgate.k8s.api import (
    BUILDRUNS,
    LEASES,
    WAITPOINTS,
    WORKORDERS,
    ApiError,
    Body,
    KubeApi,
    ResourceRef,
)
from workgate.operator.cache import ObjectCache
from workgate.operator.config import OperatorConfig
from workgate.operator.waitpoints import WaitpointReconciler

Key = tuple[str, str]


class ActionFailed(Exception):
    def __init__(self, reason: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.reason, self.message, self.retryable = reason, message, retryable


class NameTakenError(Exception):
    """A child's name is held by an object this WorkOrder does not control."""


def _classify(exc: ApiError, what: str) -> ActionFailed:
    """The API server refused the work itself (not a race): the attempt fails."""
    if exc.status in (400, 422):
        return ActionFailed(
            "InvalidManifest", f"{what} was refused: {exc.message}", retryable=False
        )
    return ActionFailed("ApplyFailed", f"{what} failed: {exc.status} {exc.message}", retryable=True)


class Actions:
    def __init__(
        self,
        api: KubeApi,
        config: OperatorConfig,
        gates: WaitpointReconciler,
        leases: ObjectCache[Key],
        build_runs: ObjectCache[Key],
    ) -> None:
        self.api = api
        self.config = config
        self.gates = gates
        self.leases = leases  # by WorkOrder
        self.build_runs = build_runs  # by name

    async def execute(self, workorder: Body, actions: list[lifecycle.Action]) -> bool:
        """Perform the decision's side effects in order. False: a race was lost, look again."""
        meta = workorder["metadata"]
        namespace, key = meta["namespace"], (meta["namespace"], meta["name"])
        for action in actions:
            match action:
                case lifecycle.ClaimLease():
                    lease = claims.build_lease(
                        workorder,
                        action.name,
                        attempt=action.attempt,
                        holder=action.holder,
                        duration_seconds=action.duration_seconds,
                        now=now_utc(),
                        instance=self.config.identity,  # replicas share one user
                    )
                    try:
                        self.leases.observe(key, await claims.create_lease(self.api, lease))
                    except claims.ClaimTaken:
                        existing = await self._existing_child(workorder, LEASES, action.name)
                        if existing:
                            self.leases.observe(key, existing)
                        return False
                case lifecycle.RenewLease():
                    try:
                        self.leases.observe(
                            key,
                            await claims.renew_lease(self.api, namespace, action.lease, now_utc()),
                        )
                    except claims.ClaimTaken:
                        return False
                case lifecycle.RevokeLease():
                    try:
                        self.leases.observe(
                            key,
                            await claims.revoke_lease(
                                self.api, namespace, action.lease, action.reason
                            ),
                        )
                    except claims.ClaimTaken:
                        return False
                case lifecycle.ReleaseLease():
                    if not await claims.release_lease(self.api, namespace, action.lease):
                        return False
                    self.leases.forget(key, action.lease.uid)
                case lifecycle.DeleteWaitpoint():
                    view = action.waitpoint
                    if not await self.api.delete_if(
                        WAITPOINTS.path(namespace, view.name), view.uid
                    ):
                        return False
                case lifecycle.DeleteWorkOrder():
                    await self.api.delete_if(WORKORDERS.path(namespace, meta["name"]), action.uid)
                case lifecycle.ApplyObjects():
                    try:
                        taken = await shipwright.apply_objects(self.api, workorder, action.objects)
                    except ApiError as exc:
                        raise _classify(exc, "applying the embedded objects") from None
                    if taken is not None:
                        raise NameTakenError(taken.message)
                case lifecycle.CreateWaitpoint():
                    created = await waitpoints.create_waitpoint(
                        self.api, waitpoints.build_waitpoint(workorder, action.name, action.gate)
                    )
                    if created is None:
                        created = await self._existing_child(workorder, WAITPOINTS, action.name)
                    if created:
                        self.gates.observe_waitpoint(created)
                case lifecycle.ActivateWaitpoint():
                    written = await waitpoints.activate(
                        self.api, namespace, action.waitpoint, now_utc(), action.timeout_seconds
                    )
                    if written is None:
                        return False
                    self.gates.observe_waitpoint(written)
                    self.gates.queue.add((namespace, action.waitpoint.name))  # buffered signals
                case lifecycle.CancelWaitpoint():
                    written = await waitpoints.cancel(
                        self.api, namespace, action.waitpoint, now_utc()
                    )
                    if written is None:
                        return False
                    self.gates.observe_waitpoint(written)
                case lifecycle.CreateBuildRun():
                    await self._create_build_run(workorder, action)
                case lifecycle.RecreateBuildRun():
                    path = BUILDRUNS.path(namespace, action.name)
                    if not await self.api.delete_if(path, action.uid):
                        return False
                    await self._create_build_run(workorder, action, lifecycle.BUILD_NOT_SEEN)
                case lifecycle.CancelBuildRun():
                    await shipwright.cancel_build_run(self.api, namespace, action.name)
        return True

    async def _create_build_run(
        self,
        workorder: Body,
        action: lifecycle.CreateBuildRun | lifecycle.RecreateBuildRun,
        recreated_after: str = "",
    ) -> None:
        try:
            created = await shipwright.create_build_run(
                self.api,
                workorder,
                action.name,
                action.build_name,
                action.attempt,
                recreated_after=recreated_after,
            )
        except ApiError as exc:
            raise _classify(exc, f"creating BuildRun {action.name}") from None
        if created is None:  # ours from before (or still terminating: the next look)
            await self._existing_child(workorder, BUILDRUNS, action.name)
        else:  # so a look before its watch event does not create it again
            self.build_runs.observe((workorder["metadata"]["namespace"], action.name), created)

    async def _existing_child(self, workorder: Body, resource: ResourceRef, name: str) -> Body:
        """A create met an existing object: ours (a race, a restart) is returned; anyone
        else's raises NameTakenError: reported, never taken over."""
        meta = workorder["metadata"]
        try:
            existing = await self.api.get(resource.path(meta["namespace"], name))
        except ApiError as exc:
            if exc.not_found:
                return {}  # gone meanwhile: the next look creates it
            raise
        if not owners.controlled_by(existing, meta["uid"]):
            kind = str(existing.get("kind") or resource.plural)
            raise NameTakenError(owners.name_taken(kind, existing).message)
        return existing
