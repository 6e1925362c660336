"""The smallest complete program: define jobs, enqueue them, wait for their results.

Run it with ``python examples/quickstart.py``. Jobs live in memory, so
nothing is left behind; pass ``sqlite:///jobs.db`` to ``JobRuntime`` to keep them.
"""

from __future__ import annotations

import anyio

from asyncjobs import JobContext, JobRuntime

runtime = JobRuntime(queues={"default": 4, "reports": 1})


@runtime.job(name="add")
async def add(x: int, y: int) -> int:
    return x + y


@runtime.job(name="build_report", queue="reports", timeout=10)
async def build_report(ctx: JobContext, user_id: int) -> str:
    for step in range(1, 4):
        await anyio.sleep(0.01)  # stands in for real work
        await ctx.progress(step / 3, f"step {step} of 3")
    return f"report for user {user_id}: ready"


async def main() -> None:
    async with runtime:
        handle = await add.enqueue(2, 3)
        print(f"2 + 3 = {await handle.result(timeout=5)}")

        report = await build_report.enqueue(user_id=7)
        print(await report.result(timeout=5))
        print(f"handle status: {await report.status()}")

        # Many jobs in one atomic store operation.
        handles = await runtime.enqueue_many([add.call(i, i) for i in range(10)])
        totals = [await h.result(timeout=5) for h in handles]
        print(f"doubled: {totals}")


if __name__ == "__main__":
    anyio.run(main)
