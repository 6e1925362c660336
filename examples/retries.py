"""Retries, permanent failures, dead jobs and snoozing, watched through events.

Run it with ``python examples/retries.py``; it finishes in well under a second.
"""

from __future__ import annotations

import anyio

from asyncjobs import (
    JobContext,
    JobDead,
    JobDied,
    JobReleased,
    JobRetrying,
    JobRuntime,
    Permanent,
    Retry,
)
from asyncjobs.testing import drain

runtime = JobRuntime()
declined_cards = {"4000-0000"}
snoozes = {"count": 0}


@runtime.job(name="flaky", max_attempts=5, backoff=0.01)
async def flaky(ctx: JobContext) -> str:
    """Fails twice (say, a dependency restarting), then succeeds."""
    if ctx.attempt < 3:
        raise ConnectionError(f"upstream refused attempt {ctx.attempt}")
    return f"flaky succeeded on attempt {ctx.attempt}"


@runtime.job(name="charge", max_attempts=3)
async def charge(card: str, cents: int) -> str:
    """A declined card will not be accepted on a retry: fail for good at once."""
    if card in declined_cards:
        raise Permanent("card declined")
    return f"charged {cents} cents"


@runtime.job(name="wait_for_upload")
async def wait_for_upload(ctx: JobContext) -> int:
    """Not ready yet is not a failure: snoozing does not use up an attempt."""
    if snoozes["count"] < 2:
        snoozes["count"] += 1
        raise Retry(snooze=True, delay=0.01)
    return ctx.attempt


async def main() -> None:
    async with runtime:
        with runtime.events.subscribe(JobRetrying, JobDied, JobReleased) as events:
            print(await (await flaky.enqueue()).result(timeout=5))

            handle = await charge.enqueue("4000-0000", 500)
            try:
                await handle.result(timeout=5)
            except JobDead as exc:
                print(f"charge is dead: {exc.error_message}")

            attempts = await (await wait_for_upload.enqueue()).result(timeout=5)
            print(f"snoozed {snoozes['count']} times, attempts used: {attempts}")

            # The card was fixed: run the dead job again, with fresh attempts.
            declined_cards.clear()
            await runtime.retry(handle.id)
            await handle.wait(timeout=5)
            print(f"retried by hand: {await handle.status()} ({await handle.result()})")

            await drain(runtime)
            print("events:")
            while True:
                with anyio.move_on_after(0.05) as waited:
                    event = await events.receive()
                if waited.cancelled_caught:
                    break  # nothing more arrived
                error = getattr(event, "error", None)
                reason = f": {error.message}" if error is not None else ""
                print(f"  {type(event).__name__} {getattr(event, 'job_name', '')}{reason}")


if __name__ == "__main__":
    anyio.run(main)
