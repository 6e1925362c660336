"""A quoting worker whose file analyses hang, for test_quoting's SIGKILL test.

``python -m tests.workloads.quoting_worker URL``: runs until killed, with a 1 s lease.
"""

from __future__ import annotations

import sys

import anyio

from examples.workloads.quoting import QuotingResources, create_runtime


async def main(url: str) -> None:
    resources = QuotingResources()
    resources.analysis_gate = anyio.Event()  # never set: every analysis hangs mid-job
    async with create_runtime(url, resources=resources, lease=1.0, worker_id="doomed"):
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
