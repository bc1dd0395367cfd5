"""When to retry a batch and how long to wait: small pure functions, a retry budget, and the
tenacity objects built from them.

The loop itself is tenacity's ``AsyncRetrying``, used as documented; everything it asks
("retry this?", "how long?", "stop now?") is answered by a named function below.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final, Protocol

import msgspec
import tenacity

from ._errors import APIError, RateLimitError, TimeoutError, TransportError
from ._statuses import Verdict, classify

__all__ = ["RetryPolicy"]

#: 2 ** 60 seconds is far past any cap: the exponent stops growing there (no float overflow).
_MAX_EXPONENT: Final = 60


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Retries of one batch: exponential backoff with full jitter, honouring ``Retry-After``.

    Defaults: 4 attempts in all; waits drawn from [0, 1 s], [0, 2 s], [0, 4 s] … each capped
    at ``max_wait``; ``Retry-After`` taken as given up to ``max_retry_after``; and no new
    attempt once ``deadline`` seconds have passed since the batch's first attempt began.

    ``retry_ambiguous``: a failure after the request went out (a read timeout, a connection
    reset mid-request or mid-answer, a gateway's 504) leaves the outcome unknown: the provider
    may have taken the batch, and it does not promise to de-duplicate ids, so a retry may
    deliver twice. By default such messages end FAILED with ``outcome_unknown`` set, for the
    caller to resend knowingly; ``True`` retries them (at-least-once). Failures before anything
    was processed (connection refused, 429, 500, 502, 503) are always retried.

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
            if not getattr(self, name) >= 0:  # NaN too
                raise ValueError(f"{name} must not be negative (nor NaN)")


NO_RETRY: Final = RetryPolicy(max_attempts=1)


def should_retry(exc: BaseException, policy: RetryPolicy) -> bool:
    """Transient failures: the statuses ``classify`` calls RETRY, and connection failures.

    A failure whose outcome is unknown (a read timeout, a reset after sending, a 504) only
    with ``policy.retry_ambiguous``; a broken 2xx never (the batch was taken).
    """
    if isinstance(exc, APIError):
        verdict = classify(exc.status)
        return verdict is Verdict.RETRY or (verdict is Verdict.UNKNOWN and policy.retry_ambiguous)
    if isinstance(exc, TransportError):
        return policy.retry_ambiguous or not exc.outcome_unknown
    return False


def backoff(policy: RetryPolicy, retry_number: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max_wait, initial_wait * 2 ** (retry_number - 1))]."""
    exponent = min(max(retry_number - 1, 0), _MAX_EXPONENT)
    ceiling = min(policy.max_wait, policy.initial_wait * 2.0**exponent)
    return rng.uniform(0.0, ceiling)


def wait_before_retry(policy: RetryPolicy, exc: BaseException | None, retry_number: int, rng: random.Random) -> float:
    """The server's ``Retry-After`` when it gave one (capped), else the jittered backoff."""
    if isinstance(exc, RateLimitError) and exc.retry_after is not None:
        return min(exc.retry_after, policy.max_retry_after)
    return backoff(policy, retry_number, rng)


def stop_reason(
    policy: RetryPolicy, attempts: int, elapsed: float, upcoming_sleep: float, max_requests: int | None = None
) -> str | None:
    """Why no further attempt may start, or None. ``elapsed`` counts from the first attempt."""
    if attempts >= policy.max_attempts:
        return f"gave up after {attempts} attempts"
    if max_requests is not None and attempts >= max_requests:
        return f"the cap of {max_requests} extra request(s) ran out"
    if elapsed + upcoming_sleep > policy.deadline:
        return f"the batch deadline of {policy.deadline:g}s would pass"
    return None


def is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError)


class RetryBudget:
    """A bucket of retry tokens shared by every batch of one client."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._tokens = policy.budget

    @property
    def tokens(self) -> float:
        return self._tokens

    def try_spend(self, exc: BaseException) -> bool:
        cost = self._policy.timeout_cost if is_timeout(exc) else self._policy.retry_cost
        if cost > self._tokens:
            return False
        self._tokens -= cost
        return True

    def refund(self) -> None:
        self._tokens = min(self._policy.budget, self._tokens + self._policy.success_refund)


# --- the tenacity objects -------------------------------------------------------------------


class Counted(Protocol):
    """A batch's history (``_outcomes.Attempts``): its requests so far, and when the first began."""

    count: int
    started: float | None


class Wait(tenacity.wait.wait_base):
    """tenacity's ``wait``: ``wait_before_retry`` on the failed attempt's exception.

    Attempts are counted by the batch's own history from ``base`` (its count when this
    send began), not by tenacity's loop: the first attempt runs before the loop exists.
    """

    def __init__(self, policy: RetryPolicy, rng: random.Random, attempts: Counted, base: int = 0) -> None:
        self._policy = policy
        self._rng = rng
        self._attempts = attempts
        self._base = base

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return self.before_retry(_failure(retry_state))

    def before_retry(self, failure: BaseException | None) -> float:
        return wait_before_retry(self._policy, failure, self._attempts.count - self._base, self._rng)


class Stop(tenacity.stop.stop_base):
    """tenacity's ``stop``: the policy's limits, then the budget.

    The budget is spent here and only here (``check``), once every other limit allows the
    retry, and ``reason`` keeps why the loop stopped for the batch's results. Attempts are
    counted as ``Wait`` counts them.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        budget: RetryBudget,
        now: Callable[[], float],
        attempts: Counted,
        max_requests: int | None = None,
        base: int = 0,
    ) -> None:
        self._policy = policy
        self._budget = budget
        self._now = now
        self._attempts = attempts  # also its ``started``: when the batch's first attempt began
        self._max_requests = max_requests
        self._base = base
        self.reason: str | None = None

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.check(_failure(retry_state), retry_state.upcoming_sleep)

    def check(self, failure: BaseException | None, upcoming_sleep: float) -> bool:
        """True when no further attempt may start after ``failure`` and a wait of ``upcoming_sleep``."""
        started = self._attempts.started
        elapsed = 0.0 if started is None else self._now() - started
        made = self._attempts.count - self._base
        reason = stop_reason(self._policy, made, elapsed, upcoming_sleep, self._max_requests)
        if reason is None and failure is not None and not self._budget.try_spend(failure):
            reason = "retry budget exhausted (too many recent failures)"
        self.reason = reason
        return reason is not None


def _failure(retry_state: tenacity.RetryCallState) -> BaseException | None:
    return None if retry_state.outcome is None else retry_state.outcome.exception()


def retry_on(policy: RetryPolicy) -> tenacity.retry_base:
    return tenacity.retry_if_exception(lambda exc: should_retry(exc, policy))
