"""When to retry a batch and how long to wait: small pure functions and a retry budget."""

from __future__ import annotations

import random
from typing import Final

import msgspec

from ._errors import APIError, CascadeError, RateLimitError, TransportError

__all__ = ["RetryPolicy"]

# Every other status is final: 400, 401, 403, 404, 413, 415 and 422 say "never as it is".
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Retries of one batch: exponential backoff with full jitter, honouring ``Retry-After``.

    Defaults: 4 attempts in all; waits drawn from [0, 1 s], [0, 2 s], [0, 4 s] … each capped
    at ``max_wait``; ``Retry-After`` taken as given up to ``max_retry_after``; and no new
    attempt once ``deadline`` seconds have passed since the batch's first attempt.

    ``retry_ambiguous``: a failure after the request went out (a read timeout, a connection
    reset mid-request or mid-answer) leaves the outcome unknown: the provider may have taken
    the batch, and it does not promise to de-duplicate ids, so a retry may deliver twice. By
    default such messages end FAILED with ``outcome_unknown`` set, for the caller to resend
    knowingly (the journal's ``resend_unknown``); ``True`` retries them (at-least-once).
    Failures before anything was sent (connection refused, connect timeout) are always retried.

    The retry budget (a bucket of ``budget`` tokens; a retry costs ``retry_cost``, a retry
    after a timeout ``timeout_cost``; each success puts ``success_refund`` back) keeps a
    sustained outage from multiplying traffic: when empty, failures are not retried.
    """

    max_attempts: int = 4
    initial_wait: float = 1.0
    max_wait: float = 30.0
    max_retry_after: float = 60.0
    deadline: float = 120.0
    budget: float = 500.0
    retry_cost: float = 5.0
    timeout_cost: float = 10.0
    success_refund: float = 1.0
    retry_ambiguous: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for name in (
            "initial_wait",
            "max_wait",
            "max_retry_after",
            "deadline",
            "budget",
            "retry_cost",
            "timeout_cost",
            "success_refund",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


NO_RETRY: Final = RetryPolicy(max_attempts=1)


def is_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """Transient failures: 429, 5xx from the retry list, connection errors and timeouts.

    A transport failure whose outcome is unknown only with ``policy.retry_ambiguous``; a
    broken 200 never (the batch was taken: resending would deliver twice).
    """
    if isinstance(exc, APIError):
        return exc.status in RETRY_STATUSES
    if isinstance(exc, TransportError):
        return policy.retry_ambiguous or not exc.outcome_unknown
    return False


def backoff(policy: RetryPolicy, retry_number: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max_wait, initial_wait * 2 ** (retry_number - 1))]."""
    ceiling = min(policy.max_wait, policy.initial_wait * 2 ** (retry_number - 1))
    return rng.uniform(0.0, ceiling)


def wait_before_retry(policy: RetryPolicy, exc: CascadeError, retry_number: int, rng: random.Random) -> float:
    """The server's ``Retry-After`` when it gave one (capped), else the jittered backoff."""
    if isinstance(exc, RateLimitError) and exc.retry_after is not None:
        return min(exc.retry_after, policy.max_retry_after)
    return backoff(policy, retry_number, rng)


class RetryBudget:
    """A bucket of retry tokens shared by every batch of one client."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._tokens = policy.budget

    @property
    def tokens(self) -> float:
        return self._tokens

    def try_spend(self, exc: CascadeError) -> bool:
        cost = self._policy.timeout_cost if _is_timeout(exc) else self._policy.retry_cost
        if cost > self._tokens:
            return False
        self._tokens -= cost
        return True

    def refund(self) -> None:
        self._tokens = min(self._policy.budget, self._tokens + self._policy.success_refund)


def _is_timeout(exc: CascadeError) -> bool:
    return isinstance(exc, TransportError) and isinstance(exc.__cause__, TimeoutError)
