"""The seam between the client and HTTP: one coroutine that posts bytes and returns bytes."""

from __future__ import annotations

import builtins
import ssl as _ssl
from collections.abc import Mapping
from typing import NamedTuple, Protocol

import aiohttp

from ._errors import ClientClosedError, ProtocolError, TimeoutError, TransportError

__all__ = ["AiohttpTransport", "RawResponse", "Transport"]

# Bodies larger than this are refused rather than read into memory. A full answer for
# 1000 messages is about 80 KB.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class RawResponse(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """Posts one request. Raises ``TransportError`` when no complete answer came back."""

    async def __call__(self, url: str, headers: Mapping[str, str], body: bytes) -> RawResponse: ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """The default transport: one ``aiohttp.ClientSession`` for the client's whole life."""

    def __init__(
        self,
        *,
        timeout: float | aiohttp.ClientTimeout,
        session: aiohttp.ClientSession | None = None,
        ssl: _ssl.SSLContext | bool = True,
        pool_size: int = 100,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._timeout = timeout if isinstance(timeout, aiohttp.ClientTimeout) else aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None
        self._ssl = ssl
        self._pool_size = pool_size
        self._max = max_response_bytes
        self._closed = False

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            # httpx's rule: a closed client never comes back to life with a fresh session.
            raise ClientClosedError("the transport is closed; nothing more is sent")
        if self._session is None:
            # Created lazily: a ClientSession must be made inside the running loop.
            connector = aiohttp.TCPConnector(limit=self._pool_size)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def __call__(self, url: str, headers: Mapping[str, str], body: bytes) -> RawResponse:
        return await self.request("POST", url, headers, body)

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        """Any method (the status host takes GET); ``__call__`` is a POST."""
        session = self._get_session()
        error: TransportError
        try:
            async with session.request(
                method, url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False, ssl=self._ssl
            ) as resp:
                data = await _read_capped(resp, self._max)
                return RawResponse(resp.status, resp.headers, data)
        except aiohttp.ConnectionTimeoutError as exc:
            # Nothing was sent: safe to try again.
            error = TimeoutError(f"cannot connect in time: {_describe(exc)}")
        except aiohttp.ClientConnectorError as exc:
            error = TransportError(f"cannot connect: {_describe(exc)}")
        except builtins.TimeoutError:
            error = TimeoutError("request timed out", outcome_unknown=True)
        except aiohttp.ClientError as exc:
            # The request may have reached the server before the connection broke.
            error = TransportError(f"connection failed: {_describe(exc)}", outcome_unknown=True)
        # Raised here, outside the handlers: aiohttp's exceptions carry the request's headers (the
        # credentials) in ``request_info``, and ``raise ... from None`` inside a handler still keeps
        # them as the hidden ``__context__``. What they say is in the message instead.
        raise error

    async def aclose(self) -> None:
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    length = resp.content_length
    if length is not None and length > limit:
        raise ProtocolError(f"response body of {length} bytes exceeds the {limit}-byte cap", outcome_unknown=True)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"response body exceeds the {limit}-byte cap", outcome_unknown=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
