"""The client's delivery-status verbs (``status``, ``track``, ``wait_delivered``): thin over ``_tracking``."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING

import msgspec

from ._client_settings import DEFAULT_BASE_URL, DEFAULT_STATUS_URL, check_base_url
from ._delivery import DeliveryReport
from ._models import Result, Status
from ._ratelimit import Priority, RateLimit, RateLimiter, credential_key, make_limiter
from ._sending import BatchSender
from ._tracking import StatusFetcher, TrackItem, track

__all__ = ["DeliveryMethods", "status_fetcher"]


class DeliveryMethods:
    """Where accepted messages went: one status, tracking many, waiting for one."""

    _status: StatusFetcher

    if TYPE_CHECKING:

        def _ensure_open(self) -> None: ...  # CascadeClient's (from ClientLifecycle)

    @property
    def status_base_url(self) -> str:
        return self._status.base_url

    async def status(self, message_id: str) -> DeliveryReport:
        """The delivery status of one accepted message: ``GET /bat/message/{messageId}``.

        Raises ``MessageNotFoundError`` when the status host does not know the id (a message
        accepted a moment ago may not show yet), or the ``CascadeError`` the request failed with.
        """
        self._ensure_open()
        return await self._status(message_id, Priority.INTERACTIVE)

    def track(
        self,
        items: Iterable[TrackItem] | AsyncIterable[TrackItem],
        *,
        timeout: float = 120.0,
        every: float = 5.0,
    ) -> AsyncIterator[DeliveryReport]:
        """Poll until each message's status is final: yields one ``DeliveryReport`` per message.

        ``items``: Results (those not ACCEPTED are skipped), message ids, or ``(tracking_id,
        message_id)`` pairs, from any iterable or async iterable. Each message is polled about
        every ``every`` seconds, backing off, never more than once a second, and all of them
        within the data endpoints' bucket. After ``timeout`` seconds from the start of its
        tracking, a message yields a report with ``final=False`` and its last status seen.
        Reports come in the order they become final. Close it early with ``aclose()``.
        """
        self._ensure_open()
        self._status.check()
        return track(self._status, items, timeout=timeout, every=every, rate=self._status.rate)

    async def wait_delivered(
        self,
        result: Result | str,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 (a per-message deadline: the documented API)
    ) -> DeliveryReport:
        """Wait for one message's final status (the OTP flow): never raises for an undelivered one.

        Returns the final report (check ``report.delivered``), or one with ``final=False`` when
        ``timeout`` seconds pass first. Polls about once a second, ahead of bulk tracking.
        """
        self._ensure_open()
        self._status.check()
        if isinstance(result, Result) and (result.status is not Status.ACCEPTED or not result.message_id):
            raise ValueError(f"{result.tracking_id!r} was not accepted ({result.status.value}): nothing to wait for")
        stream = track(
            self._status, [result], timeout=timeout, every=1.0, rate=self._status.rate, priority=Priority.INTERACTIVE
        )
        try:
            async for report in stream:
                return report
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        raise AssertionError("track() yields one report per message")  # pragma: no cover


def status_fetcher(
    sender: BatchSender,
    base_url: str,
    status_base_url: str | None,
    allow_insecure: bool,
    api_key: str | None,
    headers: Mapping[str, str],
    config: RateLimit | None,
) -> StatusFetcher:
    if status_base_url is None:
        status_base_url = DEFAULT_STATUS_URL if base_url.rstrip("/") == DEFAULT_BASE_URL else base_url
    url = check_base_url(status_base_url, allow_insecure, "status_base_url")
    limiter: RateLimiter | None = None
    status_headers: dict[str, str] | None = None
    if api_key is not None:
        status_headers = {k: v for k, v in headers.items() if k not in ("X-Viber-Auth-Token", "X-Tg-Bot-Key")}
        status_headers.pop("Content-Type", None)
        if config is not None:
            if config.redis_url is not None and config.key is None:
                # its own bucket in Redis: the data endpoints' limit is apart from the sending one
                config = msgspec.structs.replace(config, key=credential_key(api_key) + ":data")
            digest = hashlib.sha256(api_key.encode()).hexdigest()
            limiter = make_limiter(config, batch_size=1, credential_hash=digest)
    return StatusFetcher(sender, url, status_headers, limiter, None if config is None else config.requests_per_second)
