"""Hostile ``/metrics`` endpoints: what a pod or a gateway may serve instead of its metrics, each with
the reason the fetcher gives for it (after ``pod <name>: `` or ``gateway: ``).

``bad_metrics(canary=…, limit=…)`` -> ``{name: (handler, reason)}`` for ``hostile_http``: invalid
UTF-8, bodies over ``limit`` (declared, or streamed without a length), text that is not the exposition
format, a redirect to ``canary`` (which must never be hit), an error page holding ``SECRET``, a
connection closed at once or mid-body, and silence for 5 s (past a 1 s timeout).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.fixtures.http import Handler

SECRET = "SECRET-BODY-TEXT"
GOOD_POD = """\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.5
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 1.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 4.0
"""


def text(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers={"Content-Type": "text/plain; charset=utf-8"})


def bad_metrics(*, canary: str, limit: int) -> dict[str, tuple[Handler, str]]:
    async def not_utf8(_: web.Request) -> web.Response:
        return text(GOOD_POD.encode() + b"# \xff\xfe\xfd\n")

    async def huge(_: web.Request) -> web.Response:
        return text(GOOD_POD.encode() * (4 * limit // len(GOOD_POD)))

    async def huge_streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)  # chunked: no Content-Length to refuse it by
        for _ in range(64):
            await resp.write(b"# padding " * 400)
        return resp

    async def garbage(_: web.Request) -> web.Response:
        return text(b'vllm:kv_cache_usage_perc{model_name="m" 0.5\nnot { the } format\n')

    async def redirect(_: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": f"http://{canary}/metrics"})

    async def error_page(_: web.Request) -> web.Response:
        return text(f"<html>{SECRET} internal error</html>".encode(), status=500)

    async def hang_up(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()  # the client sees ServerDisconnectedError (not an OSError)
        return text(b"")

    async def cut_short(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain", "Content-Length": "10000"})
        await resp.prepare(request)
        await resp.write(GOOD_POD.encode())
        assert request.transport is not None
        request.transport.close()  # ClientPayloadError: the body ends before its length
        return resp

    async def silent(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return text(GOOD_POD.encode())

    return {
        "utf8": (not_utf8, "metrics are not UTF-8 text"),
        "huge": (huge, f"metrics body larger than {limit} bytes"),
        "stream": (huge_streamed, f"metrics body larger than {limit} bytes"),
        "garbage": (garbage, "unreadable metrics (not the Prometheus text format)"),
        "redirect": (redirect, "HTTP 302 (redirects are not followed)"),
        "error": (error_page, "HTTP 500"),
        "silent": (silent, "timed out after 1s"),
        "hangup": (hang_up, "unreachable"),
        "cut": (cut_short, "unreachable"),
    }
