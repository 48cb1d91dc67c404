"""The HTTP face of the emulator: an aiohttp application speaking the Kubernetes REST API over the store.

Every request passes one middleware (auth, counting, injected latency and failures, errors as Status
objects), then one catch-all handler that dispatches on the parsed route.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.sandbox.kubeapi import discovery, errors, patching, routing, tables
from services.sandbox.kubeapi import selectors as sel
from services.sandbox.kubeapi.faults import RESET, Faults
from services.sandbox.kubeapi.resources import DEPLOYMENTS, ResourceType
from services.sandbox.kubeapi.store import Change, Store, Subscription

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_UNAUTHENTICATED = ("/healthz", "/readyz", "/livez", "/version")
ADMIN_PREFIX = "/_emulator/"
WATCH_TAG = "watch"
ROUTE = web.RequestKey("route", routing.Route)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(), status=status, content_type="application/json", headers=headers
    )


def status_response(err: errors.ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(err.status(), status=err.code, headers=headers)


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise errors.bad_request(f"couldn't decode the request body as JSON: {exc}") from exc


def _body_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.bad_request("the request body must be a JSON object")
    return body


def scale_of(deploy: dict[str, Any]) -> dict[str, Any]:
    meta = deploy["metadata"]
    selector = sel.to_string(sel.from_label_selector_object(deploy["spec"].get("selector")))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
        "spec": {"replicas": deploy["spec"].get("replicas", 1)},
        "status": {"replicas": (deploy.get("status") or {}).get("replicas", 0), "selector": selector},
    }


class ApiServer:
    def __init__(
        self,
        store: Store,
        faults: Faults,
        *,
        token: str | None = None,
        bookmark_interval: float = 1.0,
        server_address: Callable[[], str] = lambda: "127.0.0.1:0",
    ) -> None:
        self.store = store
        self.faults = faults
        self.token = token
        self.bookmark_interval = bookmark_interval
        self._server_address = server_address
        self._closing = asyncio.Event()

    def close(self) -> None:
        """Make open watches end promptly (used on shutdown)."""
        self._closing.set()

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        for path in ("/healthz", "/readyz", "/livez"):
            app.router.add_get(path, self._health)
        app.router.add_get("/version", self._version)
        app.router.add_route("*", ADMIN_PREFIX + "{action}", self._admin)
        app.router.add_route("*", "/api", self._dispatch)
        app.router.add_route("*", "/api/{tail:.*}", self._dispatch)
        app.router.add_route("*", "/apis", self._dispatch)
        app.router.add_route("*", "/apis/{tail:.*}", self._dispatch)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    # ---- middleware ------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        try:
            if (
                self.token is not None
                and not path.startswith(_UNAUTHENTICATED)
                and request.headers.get("Authorization", "") != f"Bearer {self.token}"
            ):
                raise errors.ApiError(401, "Unauthorized")
            if not path.startswith(ADMIN_PREFIX) and not path.startswith(_UNAUTHENTICATED):
                route = routing.resolve(request.method, path, request.query)
                request[ROUTE] = route
                body = await request.read() if request.method in ("PATCH", "PUT", "POST") else b""
                self.faults.record(
                    verb=route.verb, pattern=route.pattern, path=path, method=request.method,
                    user_agent=request.headers.get("User-Agent", ""), body=body,
                )
                delay = self.faults.latency_for(path=path, verb=route.verb, method=request.method)
                if delay > 0:
                    await asyncio.sleep(delay)
                rule = self.faults.failure_for(path=path, verb=route.verb, method=request.method)
                if rule is not None and rule.status == RESET:
                    if request.transport is not None:
                        request.transport.close()
                    return web.Response(status=500)  # never sent: the connection is gone
                if rule is not None:
                    headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else None
                    return status_response(errors.ApiError(rule.status, rule.message), headers)
            return await handler(request)
        except errors.ApiError as err:
            return status_response(err)
        except sel.SelectorError as err:
            return status_response(errors.bad_request(str(err)))
        except web.HTTPException:
            raise
        except Exception as exc:
            # A bug in the emulator should read as a Kubernetes 500, and be visible in the test log.
            log.exception("emulated API failed on %s %s", request.method, path)
            return status_response(errors.ApiError(500, f"emulator error: {exc!r}"))

    # ---- small endpoints -------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _version(self, request: web.Request) -> web.Response:
        return json_response(discovery.VERSION_INFO)

    async def _not_found(self, request: web.Request) -> web.Response:
        raise errors.ApiError(404, "the server could not find the requested resource")

    async def _admin(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        body = await _read_json(request) if request.can_read_body else None
        args = body if isinstance(body, dict) else {}
        if action == "faults" and request.method == "POST":
            rule = self.faults.fail(
                int(args["status"]), times=int(args.get("times", 1)), path=args.get("path"),
                verb=args.get("verb"), method=args.get("method"), message=args.get("message"),
            )
            return json_response({"status": rule.status, "times": rule.remaining})
        if action == "faults" and request.method == "DELETE":
            self.faults.clear()
            return json_response({})
        if action == "latency" and request.method == "POST":
            self.faults.add_latency(
                float(args["seconds"]), path=args.get("path"), verb=args.get("verb"),
                method=args.get("method"), times=args.get("times"),
            )
            return json_response({})
        if action == "drop-watches" and request.method == "POST":
            return json_response({"dropped": self.faults.drop_watches()})
        if action == "compact" and request.method == "POST":
            self.faults.compact()
            return json_response({"resourceVersion": str(self.store.resource_version)})
        if action == "requests" and request.method == "GET":
            counts = [{"verb": v, "pattern": p, "count": n} for (v, p), n in sorted(self.faults.counts.items())]
            return json_response({"counts": counts})
        raise errors.ApiError(404, f"unknown emulator action {request.method} {action}")

    # ---- dispatch --------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        route = request[ROUTE]
        if route.kind == "discovery":
            return self._discovery(route, request.path)
        if route.kind != "resource" or route.resource is None:
            raise errors.ApiError(404, "the server could not find the requested resource")
        rtype, ns, name, sub = route.resource, route.namespace, route.name, route.subresource
        if sub is not None and sub not in rtype.subresources:
            raise errors.ApiError(404, "the server could not find the requested resource")
        if rtype.namespaced and ns is None and (name is not None or request.method not in ("GET", "HEAD")):
            raise errors.ApiError(404, "the server could not find the requested resource")
        if route.verb == "watch":
            return await self._watch(request, rtype, ns, name)
        if route.verb == "list":
            return self._list(request, rtype, ns)
        if name is None:
            if route.verb == "create":
                obj = self.store.create(rtype, _body_object(await _read_json(request)), namespace=ns)
                return json_response(obj, status=201)
            if route.verb == "deletecollection":
                gone = self.store.delete_collection(rtype, ns, label_selector=request.query.get("labelSelector"))
                return json_response({"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": {}, "items": gone})
            raise errors.ApiError(405, f"{request.method} is not supported on a collection")
        if sub == "scale":
            return await self._scale(request, ns, name)
        return await self._item(request, rtype, ns, name, sub)

    def _discovery(self, route: routing.Route, path: str) -> web.Response:
        doc: dict[str, Any] | None
        if path.rstrip("/") == "/api":
            doc = discovery.api_versions(self._server_address())
        elif path.rstrip("/") == "/apis":
            doc = discovery.api_group_list()
        elif route.version:
            doc = discovery.api_resource_list(route.group, route.version)
        else:
            doc = discovery.api_group(route.group)
        if doc is None:
            raise errors.ApiError(404, "the server could not find the requested resource")
        return json_response(doc)

    def _printer_columns(self, rtype: ResourceType) -> list[dict[str, Any]] | None:
        crd = self.store.admission.crds.get(rtype.key)
        return crd.printer_columns if crd is not None else None

    def _list(self, request: web.Request, rtype: ResourceType, ns: str | None) -> web.Response:
        items, rv = self.store.list(
            rtype, ns,
            label_selector=request.query.get("labelSelector"),
            field_selector=request.query.get("fieldSelector"),
        )
        if tables.wants_table(request.headers.get("Accept")):
            return json_response(
                tables.table(rtype, items, resource_version=str(rv), printer_columns=self._printer_columns(rtype))
            )
        return json_response(
            {"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": {"resourceVersion": str(rv)}, "items": items}
        )

    async def _item(
        self, request: web.Request, rtype: ResourceType, ns: str | None, name: str, sub: str | None
    ) -> web.Response:
        method = request.method
        if method in ("GET", "HEAD"):
            obj = self.store.get(rtype, ns, name)
            if tables.wants_table(request.headers.get("Accept")) and sub is None:
                return json_response(
                    tables.table(rtype, [obj], resource_version=obj["metadata"]["resourceVersion"],
                                 printer_columns=self._printer_columns(rtype))
                )
            return json_response(obj)
        if method == "PUT":
            body = _body_object(await _read_json(request))
            return json_response(self.store.update(rtype, body, namespace=ns, name=name, subresource=sub))
        if method == "PATCH":
            raw = await request.read()
            return json_response(
                self.store.patch(rtype, ns, name, raw, content_type=request.headers.get("Content-Type", ""), subresource=sub)
            )
        if method == "DELETE" and sub is None:
            options = await _read_json(request) if request.can_read_body else None
            preconditions = options.get("preconditions") if isinstance(options, dict) else None
            return json_response(self.store.delete(rtype, ns, name, preconditions=preconditions))
        raise errors.ApiError(405, f"{method} is not supported here")

    async def _scale(self, request: web.Request, ns: str | None, name: str) -> web.Response:
        deploy = self.store.get(DEPLOYMENTS, ns, name)
        current = scale_of(deploy)
        if request.method in ("GET", "HEAD"):
            return json_response(current)
        if request.method == "PUT":
            wanted = _body_object(await _read_json(request))
        elif request.method == "PATCH":
            wanted = patching.apply(current, await request.read(), request.headers.get("Content-Type"))
        else:
            raise errors.ApiError(405, f"{request.method} is not supported on scale")
        expected = (wanted.get("metadata") or {}).get("resourceVersion")
        if expected and expected != deploy["metadata"]["resourceVersion"]:
            raise errors.conflict("deployments", "apps", name)
        replicas = (wanted.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid("Scale", "autoscaling", name, [("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")])
        deploy["spec"]["replicas"] = replicas
        return json_response(scale_of(self.store.update(DEPLOYMENTS, deploy, namespace=ns, name=name)))

    # ---- watch -----------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, rtype: ResourceType, ns: str | None, name: str | None) -> web.StreamResponse:
        query = request.query
        labels = sel.parse_label_selector(query.get("labelSelector"))
        fields = sel.parse_field_selector(query.get("fieldSelector"))
        if name is not None:
            fields = sel.FieldSelector((*fields.requirements, sel.FieldRequirement(("metadata", "name"), name, False)))
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        bookmarks = routing.is_true(query.get("allowWatchBookmarks"))
        start_rv = query.get("resourceVersion") or ""

        def visible(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            return (ns is None or obj["metadata"].get("namespace") == ns) and labels.matches(
                obj["metadata"].get("labels")
            ) and fields.matches(obj)

        def event_of(change: Change) -> dict[str, Any] | None:
            now, before = visible(change.object), visible(change.old)
            if change.type == "DELETED":
                kind = "DELETED" if before or now else None
            elif now and before:
                kind = "MODIFIED"
            elif now:
                kind = "ADDED"
            elif before:
                kind = "DELETED"  # it left the selection
            else:
                kind = None
            return {"type": kind, "object": change.object} if kind else None

        # Subscribing and reading the backlog happen in one synchronous step, so no change falls between.
        sub = self.store.subscribe(rtype, tag=WATCH_TAG)
        backlog: list[dict[str, Any]] = []
        error: errors.ApiError | None = None
        if start_rv in ("", "0"):
            backlog = [
                {"type": "ADDED", "object": o}
                for o in self.store.iter_objects(rtype, ns, label_selector=labels, field_selector=fields)
            ]
        else:
            try:
                since = int(start_rv)
            except ValueError:
                sub.close()
                raise errors.bad_request(f"invalid resourceVersion {start_rv!r}") from None
            try:
                backlog = [e for c in self.store.history_since(since, rtype) if (e := event_of(c))]
            except errors.ApiError as err:
                error = err
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if error is not None:
                # As the watch cache does: 200, then one ERROR event carrying the 410 Status.
                await response.write(json.dumps({"type": "ERROR", "object": error.status()}).encode() + b"\n")
                return response
            for event in backlog:
                await response.write(json.dumps(event).encode() + b"\n")
            await self._stream(request, response, sub, event_of, rtype, timeout_seconds=timeout, bookmarks=bookmarks)
        except ConnectionResetError:
            return response
        finally:
            sub.close()
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        sub: Subscription,
        event_of: Callable[[Change], dict[str, Any] | None],
        rtype: ResourceType,
        *,
        timeout_seconds: float | None,
        bookmarks: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds if timeout_seconds is not None else None
        next_bookmark = loop.time() + self.bookmark_interval
        while not self._closing.is_set():
            now = loop.time()
            if deadline is not None and now >= deadline:
                return
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - now)
            if bookmarks:
                wait = min(wait, max(0.0, next_bookmark - now))
            try:
                # Deliver what is already queued first: with a zero timeout (a bookmark or the
                # deadline is due) wait_for cancels get() before it runs, and a watch with queued
                # changes would then never deliver them.
                change = await (sub.get() if sub.pending() else asyncio.wait_for(sub.get(), timeout=wait))
            except TimeoutError:
                if bookmarks and loop.time() >= next_bookmark and sub.pending() == 0:
                    # The queue is empty, so this client has seen every change up to the current version.
                    bookmark = {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": rtype.kind,
                            "apiVersion": rtype.api_version,
                            "metadata": {"resourceVersion": str(self.store.resource_version)},
                        },
                    }
                    await response.write(json.dumps(bookmark).encode() + b"\n")
                    next_bookmark = loop.time() + self.bookmark_interval
                continue
            if change is None:
                return  # subscription closed: dropped by a fault, or shutting down
            event = event_of(change)
            if event is not None:
                await response.write(json.dumps(event).encode() + b"\n")

