"""``cascade-async sandbox``: the local stand-in for the API, with its inbox page."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from ..sandbox import FAULTS, Sandbox

__all__ = ["sandbox_command"]


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback unless told).")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--latency", type=float, default=0.0, show_default=True, help="Seconds per request.")
@click.option("--latency-max", type=float, default=None, help="With --latency, a uniform range.")
@click.option("--fault", "faults", multiple=True, help=f"Scripted faults, in order: {', '.join(sorted(FAULTS))}.")
@click.option(
    "--fault-rate",
    "fault_rates",
    multiple=True,
    metavar="FAULT=P",
    help="Inject FAULT with probability P on each request, e.g. 500=0.05.",
)
@click.option("--rate-limit", type=float, default=None, help="Requests per second before answering 429.")
@click.option("--rate-burst", type=int, default=None)
@click.option("--reject-sender", multiple=True, help="fromName values answered with 400.")
@click.option("--reject-prefix", multiple=True, help="toPhone prefixes answered with 400 INVALID_PHONE.")
@click.option("--no-record", is_flag=True, help="Do not keep accepted messages (long benchmark runs).")
@click.option("--no-inbox", is_flag=True, help="Serve no inbox page (it keeps a bounded number of messages).")
@click.option("--no-delivery", is_flag=True, help="Keep no delivery statuses (long send benchmarks).")
@click.option("--allow-host", multiple=True, help="Host names the inbox answers to besides loopback and --host.")
@click.option("--seed", type=int, default=None)
@click.option(
    "--delivery-steps",
    type=(float, float),
    default=(0.5, 1.0),
    show_default=True,
    metavar="SCHEDULED PROCESSING",
    help="Seconds each message spends scheduled, then processing, before its final status.",
)
@click.option("--status-rate-limit", type=float, default=None, help="Status GETs per second before answering 429.")
@click.option("--status-rate-burst", type=int, default=None, help="Burst of status GETs (with --status-rate-limit).")
@click.option("--webhook-url", default=None, help="POST each delivery report to this URL.")
@click.option("--webhook-fault", "webhook_faults", multiple=True, type=click.Choice(["duplicate", "out-of-order"]))
def sandbox_command(
    host: str,
    port: int,
    latency: float,
    latency_max: float | None,
    faults: tuple[str, ...],
    fault_rates: tuple[str, ...],
    rate_limit: float | None,
    rate_burst: int | None,
    reject_sender: tuple[str, ...],
    reject_prefix: tuple[str, ...],
    no_record: bool,
    no_inbox: bool,
    no_delivery: bool,
    allow_host: tuple[str, ...],
    seed: int | None,
    delivery_steps: tuple[float, float],
    status_rate_limit: float | None,
    status_rate_burst: int | None,
    webhook_url: str | None,
    webhook_faults: tuple[str, ...],
) -> None:
    """Run the sandbox API server until interrupted (Ctrl-C)."""
    rates: dict[str, float] = {}
    for spec in fault_rates:
        name, _, p = spec.partition("=")
        try:
            rates[name] = float(p)
        except ValueError:
            raise click.BadParameter(f"{spec!r} is not FAULT=PROBABILITY", param_hint="--fault-rate") from None
    try:
        sb = Sandbox(
            host=host,
            port=port,
            latency=(latency, latency_max) if latency_max else latency,
            faults=faults,
            fault_rates=rates,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            reject_senders=reject_sender,
            reject_prefixes=reject_prefix,
            record=not no_record,
            seed=seed,
            inbox=not no_inbox,
            delivery=not no_delivery,
            allowed_hosts=allow_host,
            delivery_steps=delivery_steps,
            status_rate_limit=status_rate_limit,
            status_rate_burst=status_rate_burst,
            webhook_url=webhook_url,
            webhook_faults=webhook_faults,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    asyncio.run(_serve(sb))


async def _serve(sb: Sandbox) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with sb:
        print(f"cascade-async sandbox listening on {sb.url} (stats: {sb.url}/sandbox/stats)", flush=True)
        if sb.inbox is not None:
            print(f"inbox: {sb.url}/ (open it in a browser; send with --base-url {sb.url})", flush=True)
        await stop.wait()
    print(f"sandbox stopped: {sb.stats()}", flush=True)
