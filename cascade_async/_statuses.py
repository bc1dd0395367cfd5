"""How each HTTP status is read: the one table (``classify``) the engine, the journal and the tests ask."""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "AUTH_STATUSES",
    "ENDPOINT_STATUSES",
    "RETRY_STATUSES",
    "SPLIT_STATUSES",
    "UNKNOWN_STATUSES",
    "Verdict",
    "classify",
]


class Verdict(enum.Enum):
    OK = "ok"  # a success: read the acknowledgements
    RETRY = "retry"  # not processed for certain: safe to send again
    UNKNOWN = "unknown"  # may have been processed (a gateway gave up waiting): retried only if asked
    SPLIT = "split"  # some message is invalid: isolate it
    REJECT = "reject"  # permanent for these messages
    FAIL = "fail"  # the server failed in a way a retry will not fix (501, 505 ...): FAILED, not REJECTED
    STOP = "stop"  # about the endpoint or the credentials, not the messages: stop the call


#: Redirects (never followed), answers that mean "this URL is not the API", and a proxy that
#: wants credentials of its own (407).
ENDPOINT_STATUSES: Final = frozenset({*range(300, 400), 404, 405, 407, 415})
AUTH_STATUSES: Final = frozenset({401, 403})
SPLIT_STATUSES: Final = frozenset({400, 413, 422})
#: Refused or failed before the origin processed anything: 521-523 are a CDN that never reached it.
RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 521, 522, 523})
#: A gateway that gave up after the origin may have got the request.
UNKNOWN_STATUSES: Final = frozenset({504, 520, 524})


def classify(status: int) -> Verdict:
    if 200 <= status < 300:
        return Verdict.OK
    if status in RETRY_STATUSES:
        return Verdict.RETRY
    if status in UNKNOWN_STATUSES:
        return Verdict.UNKNOWN
    if status in SPLIT_STATUSES:
        return Verdict.SPLIT
    if status in AUTH_STATUSES or status in ENDPOINT_STATUSES or status < 200:
        return Verdict.STOP
    if 400 <= status < 500:
        return Verdict.REJECT
    return Verdict.FAIL
