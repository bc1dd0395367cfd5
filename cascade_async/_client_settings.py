"""The client's settings: their defaults, the checks they pass at construction, and a read-only view."""

from __future__ import annotations

import enum
import ipaddress
import math
import os
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from ._models import Route
from ._ratelimit import RateLimit
from ._retry import RetryPolicy
from ._version import __version__

__all__ = ["DATA_RATE_LIMIT", "DEFAULT_BASE_URL", "DEFAULT_STATUS_URL", "ClientSettings"]

DEFAULT_BASE_URL: Final = "https://restapi.smsbat.com"
DEFAULT_STATUS_URL: Final = "https://api.smsbat.com"  # the delivery status host
#: The provider's limit on data endpoints (status, balance), apart from the sending limit.
DATA_RATE_LIMIT: Final = RateLimit(requests_per_second=50.0, burst=75)
MAX_BATCH: Final = 1000
_DEFAULT_RATE_LIMIT: Final = RateLimit()
_DEFAULT_RETRY: Final = RetryPolicy()
REDIS_URL_ENV: Final = "CASCADE_REDIS_URL"


class _Unset(enum.Enum):
    UNSET = "the default"  # ``rate_limit`` not passed: tells it apart from an explicit RateLimit or None


_UNSET: Final = _Unset.UNSET


class ClientSettings:
    """The settings ``CascadeClient.__init__`` checked, as read-only attributes: fixed at construction."""

    _base_url: str
    _route: Route
    _batch_size: int
    _max_batch_bytes: int
    _linger: float
    _max_in_flight: int
    _send_linger: float
    _send_timeout: float | None
    _dedupe: bool
    _rate_limit: RateLimit | None

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def route(self) -> Route:
        return self._route

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def max_batch_bytes(self) -> int:
        return self._max_batch_bytes

    @property
    def linger(self) -> float:
        return self._linger

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    @property
    def send_linger(self) -> float:
        return self._send_linger

    @property
    def send_timeout(self) -> float | None:
        return self._send_timeout

    @property
    def dedupe(self) -> bool:
        return self._dedupe

    @property
    def rate_limit(self) -> RateLimit | None:
        """The rate limit in force (its repr hides a Redis password)."""
        return self._rate_limit


def credential_headers(
    api_key: str | None, viber_token: str | None, telegram_key: str | None
) -> tuple[dict[str, str], list[str]]:
    """The request headers, with each credential given in its own header, and the names of those given."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"cascade-async/{__version__}",
    }
    credentials: list[str] = []
    for name, header, value in (
        ("api_key", "X-Authorization-Key", api_key),
        ("viber_token", "X-Viber-Auth-Token", viber_token),
        ("telegram_key", "X-Tg-Bot-Key", telegram_key),
    ):
        if value is None:
            continue
        check_credential(name, value)
        headers[header] = value
        credentials.append(name)
    if not credentials:
        raise ValueError("no credentials: pass api_key (or set CASCADE_API_KEY), viber_token or telegram_key")
    return headers, credentials


def check_sending(
    *,
    batch_size: int,
    max_batch_bytes: int,
    linger: float,
    send_linger: float,
    max_in_flight: int,
    send_timeout: float | None,
    max_isolation_requests: int,
    timeout: float | aiohttp.ClientTimeout = 30.0,
    close_timeout: float = 10.0,
) -> None:
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be 1 to {MAX_BATCH}, got {batch_size}")
    if max_batch_bytes < 1024:
        raise ValueError("max_batch_bytes must be at least 1024")
    # Written so that NaN fails them too (it compares false with everything): a linger of NaN never
    # sent a partial batch, and a send_timeout of NaN failed every send() at once.
    if not 0 <= linger < math.inf:
        raise ValueError(f"linger must be a finite number of seconds, at least 0, got {linger}")
    if not 0 <= send_linger < math.inf:
        raise ValueError(f"send_linger must be a finite number of seconds, at least 0, got {send_linger}")
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    if send_timeout is not None and not send_timeout > 0:
        raise ValueError(f"send_timeout must be positive (or None for no limit), got {send_timeout}")
    if max_isolation_requests < 2:
        raise ValueError("max_isolation_requests must be at least 2 (one split)")
    if not isinstance(timeout, aiohttp.ClientTimeout) and not (
        isinstance(timeout, int | float) and 0 < timeout < math.inf
    ):
        raise ValueError(
            "timeout must be a finite number of seconds above 0, or an aiohttp.ClientTimeout "
            f"(ClientTimeout(total=None) for none), got {timeout!r}"
        )
    if not 0 <= close_timeout < math.inf:
        raise ValueError(f"close_timeout must be a finite number of seconds, at least 0, got {close_timeout}")


def default_rate_limit() -> RateLimit:
    """The limit a client gets when none is passed: shared through ``$CASCADE_REDIS_URL`` when it is set."""
    url = os.environ.get(REDIS_URL_ENV, "").strip()
    return RateLimit(redis_url=url) if url else _DEFAULT_RATE_LIMIT


def message_capacity(config: RateLimit | None) -> int | None:
    if config is None or config.messages_per_second is None:
        return None
    return config.message_burst or max(1, round(config.messages_per_second))


def check_credential(name: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{name} must not contain CR, LF or NUL")


def check_base_url(url: str, allow_insecure: bool, name: str = "base_url") -> str:
    # The errors never quote the URL: a mistyped one may still hold a key (``htps://key@host``).
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http(s) URL with a host, like https://api.example.com")
    if parts.scheme == "http" and not allow_insecure and not is_loopback(parts.hostname):
        raise ValueError(
            f"{name} must use https (plain http is allowed only for loopback hosts or with allow_insecure=True)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{name} must not hold credentials, a query or a fragment")
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
