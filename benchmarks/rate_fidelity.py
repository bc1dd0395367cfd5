"""Client rate limit as the server sees it: ``rate_fidelity.py [SECONDS]``.

Configured 100 requests/s with a burst of 150; one-message batches so every message is a
request; the sandbox (in this process: at ~100 requests/s it costs nothing) stamps each arrival.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import sys

from cascade_async import CascadeClient, Message, MessageType, RateLimit
from cascade_async.sandbox import Sandbox

RATE, BURST = 100.0, 150


async def run(seconds: float) -> dict[str, float]:
    n = int(BURST + RATE * seconds)
    messages = (
        Message(id=f"r{i}", from_name="Bench", to_phone="+380501234567", message_type=MessageType.PROMO, text="x")
        for i in range(n)
    )
    async with Sandbox() as sb:
        limit = RateLimit(requests_per_second=RATE, burst=BURST)
        async with CascadeClient(
            api_key="b", base_url=sb.url, rate_limit=limit, batch_size=1, max_in_flight=64, linger=0
        ) as client:
            report = await client.send_many(messages)
        times = sorted(sb.request_times)
    assert report.ok, report.summary()
    start = times[0]
    # A token bucket allows burst + rate * t requests by time t: the achieved rate is what came
    # beyond the initial burst, over the whole run.
    steady = (len(times) - BURST) / (times[-1] - start)

    def most_in_a_second(ts: list[float]) -> int:
        return max(bisect.bisect_left(ts, t + 1.0) - i for i, t in enumerate(ts))

    # windows that start once the initial burst is spent (1.5 s of credit at 100/s refills by then)
    spent = [t for t in times if t >= start + 1.0]
    return {
        "configured_rps": RATE,
        "burst": BURST,
        "requests": len(times),
        "seconds": times[-1] - start,
        "achieved_rps_after_burst": steady,
        "error_pct": abs(steady - RATE) / RATE * 100,
        "max_in_any_1s_window": most_in_a_second(times),
        "max_in_any_1s_window_after_burst": most_in_a_second(spent),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0))))
