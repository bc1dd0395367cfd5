from __future__ import annotations

import random

import pytest

from cascade_async import (
    AuthenticationError,
    BadRequestError,
    CascadeError,
    EndpointError,
    ProtocolError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
    ValidationError,
)
from cascade_async._retry import RetryBudget, backoff, should_retry, wait_before_retry

from .support import timeout_error


def api(cls: type[CascadeError], status: int, **kw: object) -> CascadeError:
    return cls("x", status=status, **kw)  # type: ignore[call-arg,arg-type]


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        pytest.param(api(RateLimitError, 429), True, id="429"),
        pytest.param(api(ServerError, 500), True, id="500"),
        pytest.param(api(ServerError, 502), True, id="502"),
        pytest.param(api(ServerError, 503), True, id="503"),
        pytest.param(api(ServerError, 504, outcome_unknown=True), False, id="504-unknown-not-retried-by-default"),
        pytest.param(api(ServerError, 408), True, id="408"),
        pytest.param(api(ServerError, 522), True, id="522-never-reached-origin"),
        pytest.param(api(ServerError, 501), False, id="501"),
        pytest.param(TransportError("refused"), True, id="connection-refused"),
        pytest.param(TransportError("reset after sending", outcome_unknown=True), False, id="reset-after-send"),
        pytest.param(timeout_error(), False, id="read-timeout"),
        pytest.param(api(BadRequestError, 400), False, id="400"),
        pytest.param(api(AuthenticationError, 401), False, id="401"),
        pytest.param(api(AuthenticationError, 403), False, id="403"),
        pytest.param(api(EndpointError, 404), False, id="404"),
        pytest.param(api(BadRequestError, 413), False, id="413"),
        pytest.param(api(EndpointError, 415), False, id="415"),
        pytest.param(api(BadRequestError, 422), False, id="422"),
        pytest.param(ValidationError("bad", field="id", tracking_id="a"), False, id="validation"),
        pytest.param(ProtocolError("broken 200"), False, id="protocol"),
    ],
)
def test_what_is_retried(exc: CascadeError, retry: bool) -> None:
    assert should_retry(exc, RetryPolicy()) is retry


def test_ambiguous_failures_are_retried_only_when_asked() -> None:
    at_least_once = RetryPolicy(retry_ambiguous=True)
    assert should_retry(timeout_error(), at_least_once)
    assert should_retry(TransportError("reset", outcome_unknown=True), at_least_once)
    assert not should_retry(ProtocolError("broken 200", outcome_unknown=True), at_least_once)


def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling() -> None:
    policy = RetryPolicy(initial_wait=1.0, max_wait=30.0)
    rng = random.Random(1)
    for n, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (10, 30.0)]:
        draws = [backoff(policy, n, rng) for _ in range(300)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.9 * ceiling  # it uses the whole range, not a fixed wait
        assert min(draws) < 0.1 * ceiling


def test_retry_after_wins_and_is_capped() -> None:
    policy = RetryPolicy(max_retry_after=10.0)
    rng = random.Random(1)
    assert wait_before_retry(policy, api(RateLimitError, 429, retry_after=3.5), 1, rng) == 3.5
    assert wait_before_retry(policy, api(RateLimitError, 429, retry_after=500.0), 1, rng) == 10.0
    assert 0 <= wait_before_retry(policy, api(RateLimitError, 429), 1, rng) <= 1.0


def test_budget_spends_refunds_and_runs_dry() -> None:
    budget = RetryBudget(RetryPolicy(budget=20, retry_cost=5, timeout_cost=10, success_refund=1))
    assert budget.try_spend(timeout_error())
    assert budget.tokens == 10
    assert budget.try_spend(api(ServerError, 500))
    assert budget.try_spend(api(ServerError, 500))
    assert not budget.try_spend(api(ServerError, 500))
    budget.refund()
    assert budget.tokens == 1
    for _ in range(100):
        budget.refund()
    assert budget.tokens == 20


@pytest.mark.parametrize("kw", [{"max_attempts": 0}, {"initial_wait": -1}, {"deadline": -1}])
def test_policy_rejects_nonsense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        RetryPolicy(**kw)  # type: ignore[arg-type]
