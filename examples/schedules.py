"""Cron and interval schedules: declared with decorators, managed at run time.

Run it with ``python examples/schedules.py``; it finishes in about a second.
A real app would use cron expressions like ``"0 2 * * *"``; here an interval
of a fifth of a second makes the schedule fire quickly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import anyio

from asyncjobs import CronTrigger, JobCompleted, JobRuntime

runtime = JobRuntime()
ticks: list[str] = []


@runtime.every(0.2, name="heartbeat")
@runtime.job(name="heartbeat")
async def heartbeat() -> None:
    ticks.append(datetime.now(UTC).isoformat())
    print(f"tick {len(ticks)}")


@runtime.cron("0 3 * * *", timezone="Europe/Berlin", name="cleanup")
@runtime.job(name="cleanup", max_attempts=1)
async def cleanup(older_than_days: int = 30) -> str:
    return f"removed files older than {older_than_days} days"


def preview_dst() -> None:
    """Where a 02:30 job lands on the night Berlin skips from 02:00 to 03:00."""
    berlin = ZoneInfo("Europe/Berlin")
    trigger = CronTrigger("30 2 * * *", timezone="Europe/Berlin")
    fire = trigger.next_after(datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert fire is not None
    local = fire.astimezone(berlin)
    print(f"Europe/Berlin 02:30 on 2026-03-29 runs at {local:%H:%M %Z} ({fire:%H:%M} UTC)")


async def main() -> None:
    preview_dst()
    async with runtime:
        with runtime.events.subscribe(JobCompleted) as completed:
            for _ in range(3):  # three heartbeats, about 0.6 s
                await completed.wait_for(JobCompleted, lambda e: e.job_name == "heartbeat")

        # Schedules live in the store: every process sharing it sees and fires them once.
        for schedule in await runtime.schedules.list():
            next_fire = datetime.fromtimestamp(schedule.next_fire_at or 0, UTC)
            print(f"schedule {schedule.name!r}: next at {next_fire:%Y-%m-%d %H:%M:%S} UTC")

        paused = await runtime.schedules.pause("heartbeat")
        print(f"paused: {paused.paused}")

        # Run the nightly job now, without waiting for 03:00.
        handle = await runtime.schedules.trigger("cleanup")
        print(await handle.result(timeout=5))
        runs = await runtime.schedules.runs("cleanup")
        print(f"runs of 'cleanup': {len(runs)}")

        # Add one at run time (it replaces a schedule of the same name), then remove it.
        await runtime.schedules.add(cleanup, "@weekly", name="weekly-cleanup", args=(90,))
        await runtime.schedules.remove("weekly-cleanup")


if __name__ == "__main__":
    anyio.run(main)
