"""The workload behind ``asyncjobs demo``: a small shop's background jobs, on a live console.

Three queues with different limits; emails in bursts (some delayed),
reports that report progress page by page, a flaky inventory sync that
fails twice and then succeeds, a card charge that always fails and goes
dead, a cleanup schedule every few seconds and a nightly cron schedule.
The jobs sleep to stand in for real work; everything else is the real
runtime on the real store.
"""

from __future__ import annotations

import random
from itertools import count

import anyio
from rich.console import Console

from ._context import JobContext
from ._retry import FixedBackoff
from ._runtime import JobRuntime
from .console import live

__all__ = ["DEMO_QUEUES", "build_demo_runtime", "run_demo"]

#: queue -> concurrency limit of the demo runtime.
DEMO_QUEUES = {"emails": 4, "reports": 2, "default": 2}
#: seconds between two runs of the cleanup job.
CLEANUP_EVERY = 5.0


class InventoryUnavailable(ConnectionError):
    """The demo's flaky upstream: down for the first attempts of each sync."""


class CardDeclined(RuntimeError):
    """The demo's permanent failure."""


def build_demo_runtime(url: str, *, seed: int | None = None) -> JobRuntime:
    """Build the demo runtime on the store at *url* with its jobs registered.

    :param url: a backend URL (see :func:`asyncjobs.backends.from_url`).
    :param seed: seeds the job durations, for a repeatable run.
    """
    # Short grace: the demo's jobs are seconds long, and Ctrl-C should feel prompt.
    runtime = JobRuntime(url, queues=DEMO_QUEUES, shutdown_grace=1.0, lease=10.0)
    rng = random.Random(seed)

    @runtime.job(name="send_email", queue="emails", max_attempts=3)
    async def send_email(to: str, template: str) -> str:
        await anyio.sleep(rng.uniform(0.1, 0.6))
        return f"{template} sent to {to}"

    @runtime.job(name="build_report", queue="reports", timeout=60)
    async def build_report(ctx: JobContext, report_id: int, pages: int) -> dict[str, int]:
        for page in range(1, pages + 1):
            await anyio.sleep(rng.uniform(0.15, 0.35))
            await ctx.progress(page / pages, f"page {page}/{pages}")
        return {"report_id": report_id, "pages": pages}

    @runtime.job(name="sync_inventory", max_attempts=4, backoff=FixedBackoff(delay=1.0))
    async def sync_inventory(ctx: JobContext, warehouse: str) -> str:
        await anyio.sleep(0.3)
        if ctx.attempt < 3:
            raise InventoryUnavailable(f"warehouse {warehouse} timed out (attempt {ctx.attempt})")
        return f"{warehouse} in sync"

    @runtime.job(name="charge_card", max_attempts=3, backoff=FixedBackoff(delay=0.5))
    async def charge_card(order_id: int) -> None:
        await anyio.sleep(0.2)
        raise CardDeclined(f"order {order_id}: card declined by issuer")

    # Schedules fire once per tick however many demos share the store.
    @runtime.every(CLEANUP_EVERY, overlap=False)
    @runtime.job(name="cleanup_sessions")
    async def cleanup_sessions() -> int:
        await anyio.sleep(0.2)
        return rng.randint(0, 40)

    @runtime.cron("0 3 * * *", timezone="Europe/Berlin")
    @runtime.job(name="nightly_report", queue="reports")
    async def nightly_report() -> None:
        await anyio.sleep(1.0)

    return runtime


async def _feed(runtime: JobRuntime, seed: int | None) -> None:
    """Enqueue the workload: a first batch, then a little more every second."""
    rng = random.Random(seed)
    send_email = runtime.function("send_email")
    build_report = runtime.function("build_report")
    sync_inventory = runtime.function("sync_inventory")
    charge_card = runtime.function("charge_card")
    reports = count(1)
    orders = count(1000)

    # Jobs that take a JobContext get their arguments by keyword: the dispatcher passes the
    # context as a keyword, which a positional first argument would collide with.
    await runtime.enqueue_many(
        [
            *(send_email.call(f"user{n}@example.com", "welcome") for n in range(8)),
            *(
                send_email.options(delay=3 + n).call(f"user{n}@example.com", "reminder")
                for n in range(4)
            ),
            *(
                build_report.call(report_id=next(reports), pages=rng.randint(6, 14))
                for _ in range(3)
            ),
            sync_inventory.call(warehouse="north"),
            charge_card.call(next(orders)),
        ]
    )
    for tick in count():
        calls = [
            send_email.call(f"user{rng.randint(100, 999)}@example.com", "receipt")
            for _ in range(rng.randint(1, 4))
        ]
        if tick % 3 == 0:
            calls.append(build_report.call(report_id=next(reports), pages=rng.randint(4, 10)))
        if tick % 7 == 3:
            calls.append(sync_inventory.call(warehouse=rng.choice(["north", "south", "east"])))
        if tick % 11 == 5:
            calls.append(charge_card.call(next(orders)))
        await runtime.enqueue_many(calls)
        await anyio.sleep(1.0)


async def run_demo(
    runtime: JobRuntime,
    *,
    seconds: float | None = None,
    console: Console | None = None,
    refresh: float = 0.5,
    seed: int | None = None,
) -> None:
    """Feed the demo workload to *runtime* and show it live until *seconds* pass or cancelled.

    The caller starts and stops the runtime (``async with runtime:`` around this
    call), so cancelling the demo leaves the runtime's graceful shutdown to run
    outside the cancelled scope.

    :param runtime: from :func:`build_demo_runtime`, started.
    :param seconds: how long to run; ``None`` runs until cancelled.
    :param console: where the live view is drawn.
    :param refresh: seconds between console frames.
    :param seed: seeds the workload's randomness.
    """
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_feed, runtime, seed)
        await live(runtime, refresh=refresh, seconds=seconds, console=console)
        tasks.cancel_scope.cancel()
