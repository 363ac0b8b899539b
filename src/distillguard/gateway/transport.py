"""An httpx transport backed by aiohttp's connection pool.

httpx's own pool (httpcore) costs about a millisecond of CPU per request and degrades with concurrency; aiohttp's
is several times cheaper. The gateway keeps httpx's API (and httpx.MockTransport in tests) and uses this transport
when aiohttp is installed (the ``gateway`` extra). Errors are mapped to the httpx exceptions the proxy handles:
connect failures to ``ConnectError``/``ConnectTimeout``, read stalls to ``ReadTimeout``, broken connections and
bodies to ``RemoteProtocolError``/``ReadError``.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import httpx

__all__ = ["AiohttpTransport", "aiohttp_available"]


def aiohttp_available() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def _map_error(exc: BaseException, phase: str) -> httpx.TransportError:
    import aiohttp

    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        if isinstance(exc, aiohttp.ConnectionTimeoutError) or phase == "connect":
            return httpx.ConnectTimeout(str(exc) or "connect timeout")
        return httpx.ReadTimeout(str(exc) or "read timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc))
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(str(exc) or type(exc).__name__)
    return httpx.ReadError(f"{type(exc).__name__}: {exc}")


class _Body(httpx.AsyncByteStream):
    def __init__(self, resp) -> None:
        self._resp = resp

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _map_error(exc, "read") from exc

    async def aclose(self) -> None:
        self._resp.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, limit: int = 512, limit_per_host: int = 0):
        self._limit, self._per_host = limit, limit_per_host
        self._session = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._per_host),
                auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))
        t = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(total=None, connect=t.get("pool"), sock_connect=t.get("connect"),
                                        sock_read=t.get("read"))
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                   if k.lower() not in (b"host", b"content-length", b"transfer-encoding")]
        body = request.content if request.method not in ("GET", "HEAD") or request.content else None
        try:
            resp = await self._session.request(request.method, str(request.url), headers=headers, data=body,
                                               timeout=timeout, allow_redirects=False)
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _map_error(exc, "connect" if isinstance(exc, aiohttp.ClientConnectorError) else "read") from exc
        return httpx.Response(resp.status,
                              headers=[(k, v) for k, v in resp.raw_headers
                                       if k.lower() not in (b"content-length", b"transfer-encoding")],
                              stream=_Body(resp), request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
