"""How fast the sandbox inbox renders with 10,000 stored messages: ``python benchmarks/inbox_render.py [ROUNDS]``.

Headless Chromium (``/usr/bin/chromium`` and ``chromedriver``, with selenium from the test extra) loads the
inbox of a sandbox holding 9,000 messages to 1,000 recipients plus a 1,000-message thread, ROUNDS times (5 by
default). The page itself times rendering the recipients list and opening the thread
(``window.inboxTimings``). Prints the median, the worst and every round in milliseconds, then one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from typing import Any

from cascade_async import CascadeClient, Message, MessageType
from cascade_async.pytest_plugin import SandboxThread

HOT = "+380509999999"


def fill(url: str) -> None:
    def msg(tid: str, phone: str, text: str) -> Message:
        return Message(id=tid, from_name="Shop", to_phone=phone, message_type=MessageType.PROMO, text=text)

    bulk = [msg(f"bulk-{i}", f"+38050{i % 1000:07d}", f"Bulk message {i}") for i in range(9000)]
    thread = [msg(f"hot-{i}", HOT, f"Thread message {i}") for i in range(1000)]

    async def run() -> None:
        async with CascadeClient(api_key="bench", base_url=url, batch_size=1000, rate_limit=None) as client:
            for part in (bulk, thread):  # the thread last: its recipient is the newest activity
                report = await client.send_many(part)
                assert report.ok, report.summary()

    asyncio.run(run())


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,860"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def one_round(page: Any, url: str) -> tuple[float, float]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    wait = WebDriverWait(page, 30, poll_frequency=0.01)
    page.get(url + "/")
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))
    list_ms = float(page.execute_script("return window.inboxTimings.list"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'button.thread[data-phone="{HOT}"]'))[0].click()
    wait.until(lambda d: d.execute_script("return window.inboxTimings.thread !== undefined"))
    return list_ms, float(page.execute_script("return window.inboxTimings.thread"))


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with SandboxThread() as sandbox:
        fill(sandbox.url)
        page = browser()
        try:
            one_round(page, sandbox.url)  # warm the browser's caches up
            runs = [one_round(page, sandbox.url) for _ in range(rounds)]
        finally:
            page.quit()
    lists, threads = [r[0] for r in runs], [r[1] for r in runs]
    for name, xs in (("recipients list", lists), ("a 1,000-message thread", threads)):
        every = ", ".join(f"{x:.0f}" for x in xs)
        print(f"{name}: median {statistics.median(xs):.1f} ms, worst {max(xs):.1f} ms ({every})")
    print(json.dumps({"messages": 10_000, "rounds": rounds, "list_ms": lists, "thread_ms": threads}))


if __name__ == "__main__":
    main()
