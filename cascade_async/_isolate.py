"""Finding the bad messages of a batch refused as a whole (400, 413, 422).

The provider answers one error for the whole request, so the batch is halved, depth first,
until each refusal is pinned to one message. Two rules keep that cheap:

- when both halves fail with the same code and field, and every message of the part shares
  that field's value (one unregistered sender name for the whole job), the part is rejected
  at once: a batch like that costs 3 requests, not 2n - 1;
- at most ``cap`` extra requests per batch; messages not isolated by then end FAILED with
  ``ErrorCode.NOT_ISOLATED`` (resendable), since nothing says they are bad.

For k bad messages among n that is at most 1 + 2·k·⌈log2 n⌉ requests, and never more than
1 + ``cap``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from ._errors import APIError, BadRequestError, ErrorCode
from ._models import Message, Result, Route, Status
from ._ratelimit import Priority

if TYPE_CHECKING:
    from ._outcomes import Failed, Recorder
    from ._sending import BatchSender

#: Wire field name → Message attribute, for the shared-value rule.
_ATTRIBUTE: Final = dict(zip(Message.__struct_encode_fields__, Message.__struct_fields__, strict=True))


async def isolate_bad_messages(
    sender: BatchSender,
    batch: Sequence[Message],
    route: Route,
    recorder: Recorder | None,
    first: Failed,
    *,
    cap: int,
    alive: Callable[[int], bool] | None = None,
    priority: Priority = Priority.BULK,
) -> list[Result]:
    """``alive`` (for coalesced sends) says per position whether the message is still wanted."""
    from ._outcomes import Failed

    results: list[Result | None] = [None] * len(batch)
    left = cap
    todo: list[tuple[int, int, Failed]] = [(0, len(batch), first)]
    while todo:
        lo, hi, failed = todo.pop()
        if hi - lo == 1:
            results[lo] = failed.results(batch[lo:hi])[0]
            continue
        if left < 2:
            results[lo:hi] = _not_isolated(batch[lo:hi], failed, cap)
            continue
        mid = (lo + hi) // 2
        halves: list[tuple[int, int, list[Result] | Failed]] = []
        for a, b in ((lo, mid), (mid, hi)):
            if left < 1:
                halves.append((a, b, failed))  # nothing left to spend: not isolated below
                continue
            before = failed.attempts.carried()
            start = before.count
            part_alive = None if alive is None else _offset(alive, a)
            got = await sender.send(
                batch[a:b], route, recorder, before, alive=part_alive, max_requests=left, priority=priority
            )
            left -= before.count - start
            halves.append((a, b, got))
        (_, _, g1), (_, _, g2) = halves
        both_sent = g1 is not failed and g2 is not failed
        if both_sent and isinstance(g1, Failed) and isinstance(g2, Failed) and _same_fault(g1, g2, batch[lo:hi]):
            results[lo:hi] = g1.results(batch[lo:hi])
            continue
        for a, b, got in halves:
            if not isinstance(got, Failed):
                results[a:b] = got
            elif got.splittable:
                todo.append((a, b, got))
            else:
                results[a:b] = got.results(batch[a:b])
    return results  # type: ignore[return-value]  # every position is filled above


def _offset(alive: Callable[[int], bool], start: int) -> Callable[[int], bool]:
    return lambda i: alive(start + i)


def _same_fault(one: Failed, two: Failed, part: Sequence[Message]) -> bool:
    e1, e2 = one.error, two.error
    if not (one.splittable and two.splittable and isinstance(e1, APIError) and isinstance(e2, APIError)):
        return False
    if e1.code != e2.code or e1.field is None or e1.field != e2.field:
        return False
    attribute = _ATTRIBUTE.get(e1.field)
    if attribute is None:
        return False
    first = getattr(part[0], attribute)
    return all(getattr(m, attribute) == first for m in part)


def _not_isolated(part: Sequence[Message], failed: Failed, cap: int) -> list[Result]:
    from ._outcomes import Failed

    err = failed.error
    assert isinstance(err, APIError)
    error = BadRequestError(
        f"the batch was refused ({err}) and the cap of {cap} extra requests ran out before this message "
        "was checked alone; it may be fine: resend it",
        status=err.status,
        code=ErrorCode.NOT_ISOLATED,
        field=err.field,
        body=err.body,
        route=err.route,
    )
    return Failed(error, failed.attempts).results(part, status=Status.FAILED)
