"""Workload 3, a quoting service (Bull), as one asyncjobs app with its HTTP API.

What it shows, one library feature per requirement:

- File analysis with progress (``await ctx.progress(fraction, message)``, seen
  by every process and in the API's job status), quote calculation, e-mail
  and report jobs, each with its own attempts, backoff and timeout
  (``@jobs.job(max_attempts=, backoff=, timeout=)``).
- Priorities: a tenant on the priority plan enqueues with
  ``options(priority=-10)`` (lower runs first); the API takes
  ``"options": {"priority": -10}``.
- Dead jobs listed and retried by an operator: ``GET /api/jobs?state=dead``
  and ``POST /api/jobs/{id}/retry`` (audited with the token's identity).
- Every job scoped to a tenant: ``options(partition=tenant, tags={"tenant":
  tenant})``; fairness between tenants: ``Queue(partition_concurrency=2)``
  (partitions take turns, at most two running per tenant cluster-wide);
  listings by tenant: ``GET /api/jobs?partition=acme`` or ``?tag=tenant:acme``.
- The HTTP API from the admin app behind a bearer token
  (``asyncjobs.web.admin_app(runtime, auth=bearer_tokens(...))``): create
  (``POST /api/jobs``), schedule (the same with ``"options": {"delay": s}``
  or ``{"at": "2026-...Z"}``), status (``GET /api/jobs/{id}``), retry,
  cancel (``POST /api/jobs/{id}/cancel``), metrics (``GET /metrics``) and
  health (``GET /healthz``).
- A worker killed mid-job and its job recovered: leases (``lease=`` here
  10 s, ``--lease`` to change) expire, and another worker's heartbeat
  requeues the job (``LeaseExpired``) and runs it again; the test kills a
  real worker process with SIGKILL.

Findings (what the library does not carry, noted for the lead):

- A job a handler enqueues does not inherit its tenant: the handlers pass
  ``partition=ctx.job.partition, tags=ctx.tags`` on by hand (:func:`_same_tenant`).
- The admin app's identities are ``admin`` or ``viewer`` for the whole store:
  a tenant's own token cannot be limited to its partition, so this API is
  for the service's operators and its backend, not for tenants directly.

Run it::

    python examples/workloads/quoting.py                  # a demo of the API on sqlite:///quoting.db
    python examples/workloads/quoting.py --serve --port 8000   # uvicorn; token in $QUOTING_TOKEN
    python examples/workloads/quoting.py --url redis://localhost:6379/0 --serve
    asyncjobs worker examples.workloads.quoting:runtime   # more workers: kill -9 one mid-job
    curl -H "Authorization: Bearer $QUOTING_TOKEN" localhost:8000/api/jobs?partition=acme

Its test is ``tests/workloads/test_quoting.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.routing import Mount

from asyncjobs import (
    Clock,
    ExponentialBackoff,
    FixedBackoff,
    JobContext,
    JobFunction,
    JobRegistry,
    JobRuntime,
    Permanent,
    Queue,
)
from asyncjobs.backends import Backend
from asyncjobs.web import Identity, admin_app, bearer_tokens

DEFAULT_URL = "sqlite:///quoting.db"
MATERIALS = {"steel": Decimal("4.20"), "aluminium": Decimal("7.90"), "abs": Decimal("1.10")}


@dataclasses.dataclass
class Upload:
    """A CAD file a tenant uploaded."""

    tenant: str
    file_id: str
    pages: int
    material: str
    email: str


@dataclasses.dataclass
class Analysis:
    """What the file analysis found."""

    file_id: str
    volume_cm3: Decimal
    material: str


@dataclasses.dataclass
class Quote:
    """A price for one analysed file."""

    file_id: str
    tenant: str
    price: Decimal


class QuotingResources:
    """The service's own resources (an outbox and a quote store here), as ``ctx.state``."""

    def __init__(self) -> None:
        self.quotes: dict[str, Quote] = {}
        self.outbox: list[tuple[str, str]] = []
        self.reports: list[str] = []
        #: When set, file analyses wait for it (a test holds one running, or kills its worker).
        self.analysis_gate: anyio.Event | None = None
        #: Simulates the mail relay being down.
        self.mail_down = False


jobs = JobRegistry()


def _same_tenant(ctx: JobContext, job: JobFunction[Any, Any]) -> JobFunction[Any, Any]:
    """*job* in the running job's tenant (partition and tags are not inherited)."""
    return job.options(partition=ctx.job.partition, tags=dict(ctx.tags))


@jobs.job(
    name="quoting.analyze_file",
    queue="analysis",
    max_attempts=3,
    backoff=ExponentialBackoff(base=2, cap=60),
    timeout=300,
)
async def analyze_file(ctx: JobContext, upload: Upload) -> Analysis:
    """Read the file page by page, reporting progress; then queue its quote."""
    resources: QuotingResources = ctx.state
    for page in range(1, upload.pages + 1):
        if resources.analysis_gate is not None:
            await resources.analysis_gate.wait()
        await ctx.progress(page / upload.pages, f"page {page} of {upload.pages}")
    analysis = Analysis(upload.file_id, Decimal(upload.pages) * Decimal("12.5"), upload.material)
    await _same_tenant(ctx, calculate_quote).enqueue(upload, analysis)
    return analysis


@jobs.job(
    name="quoting.calculate_quote",
    queue="quotes",
    max_attempts=5,
    backoff=FixedBackoff(5),
    timeout=30,
)
async def calculate_quote(ctx: JobContext, upload: Upload, analysis: Analysis) -> Quote:
    """Price the analysed part; an unknown material can never be priced (Permanent)."""
    resources: QuotingResources = ctx.state
    rate = MATERIALS.get(analysis.material)
    if rate is None:
        raise Permanent(f"no price list for material {analysis.material!r}")
    quote = Quote(
        upload.file_id, upload.tenant, (analysis.volume_cm3 * rate).quantize(Decimal("0.01"))
    )
    resources.quotes[upload.file_id] = quote
    await _same_tenant(ctx, send_quote_email).enqueue(upload.email, upload.file_id)
    return quote


@jobs.job(
    name="quoting.send_quote_email",
    queue="email",
    max_attempts=8,
    backoff=ExponentialBackoff(base=10, cap=3600),
    timeout=20,
)
async def send_quote_email(ctx: JobContext, to: str, file_id: str) -> None:
    """Mail the quote; a relay that is down is retried for hours."""
    resources: QuotingResources = ctx.state
    if resources.mail_down:
        raise ConnectionError("mail relay refused the connection")
    resources.outbox.append((to, file_id))


@jobs.job(name="quoting.build_report", queue="reports", max_attempts=2, timeout=600)
async def build_report(ctx: JobContext, tenant: str, month: str) -> str:
    """A tenant's monthly quote report."""
    resources: QuotingResources = ctx.state
    count = sum(q.tenant == tenant for q in resources.quotes.values())
    report = f"{tenant} {month}: {count} quotes"
    resources.reports.append(report)
    return report


QUEUES: Mapping[str, Queue] = {
    "analysis": Queue(concurrency=4, partition_concurrency=2),
    "quotes": Queue(concurrency=4, partition_concurrency=2),
    "email": Queue(concurrency=8),
    "reports": Queue(concurrency=1, partition_concurrency=1),
}


def create_runtime(
    url: str | Backend | None = None,
    *,
    resources: QuotingResources | None = None,
    clock: Clock | None = None,
    lease: float = 10.0,
    **options: Any,
) -> JobRuntime:
    """The service's runtime on the store at *url* ($ASYNCJOBS_URL, else ``sqlite:///quoting.db``)."""
    runtime = JobRuntime(
        url or os.environ.get("ASYNCJOBS_URL") or DEFAULT_URL,
        queues=QUEUES,
        lease=lease,
        state=resources if resources is not None else QuotingResources(),
        clock=clock,
        **options,
    )
    runtime.include(jobs)
    return runtime


def create_app(runtime: JobRuntime, tokens: Mapping[str, Identity]) -> Starlette:
    """The HTTP service: the admin app's API behind *tokens*, the runtime in its lifespan."""
    api = admin_app(runtime, auth=bearer_tokens(tokens), title="quoting")
    return Starlette(lifespan=runtime.lifespan, routes=[Mount("/", app=api)])


#: ``asyncjobs worker examples.workloads.quoting:runtime`` runs this one ($ASYNCJOBS_URL).
runtime = create_runtime()


def tenant_options(tenant: str, **more: Any) -> dict[str, Any]:
    """The API's ``options`` that scope a job to *tenant*."""
    return {"partition": tenant, "tags": {"tenant": tenant}, **more}


async def demo(url: str | None) -> None:
    import httpx

    resources = QuotingResources()
    service = create_runtime(url, resources=resources, shutdown_grace=1)
    token = secrets.token_urlsafe(16)
    app = create_app(service, {token: Identity("ops", "admin")})
    headers = {"Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quoting") as client:
            print("without a token:", (await client.get("/api/jobs")).status_code)
            created = []
            for tenant, material, priority in [("acme", "steel", 0), ("globex", "abs", -10)]:
                upload = Upload(tenant, f"{tenant}-part", 3, material, f"buyer@{tenant}.example")
                reply = await client.post(
                    "/api/jobs",
                    headers=headers,
                    json={
                        "name": "quoting.analyze_file",
                        "args": [dataclasses.asdict(upload)],
                        "options": tenant_options(tenant, priority=priority),
                    },
                )
                created.append(reply.json()["job"]["id"])
                print(f"create {tenant}: {reply.status_code}")
            bad = Upload("acme", "acme-odd", 1, "unobtainium", "buyer@acme.example")
            await client.post(
                "/api/jobs",
                headers=headers,
                json={
                    "name": "quoting.analyze_file",
                    "args": [dataclasses.asdict(bad)],
                    "options": tenant_options("acme"),
                },
            )
            later = await client.post(
                "/api/jobs",
                headers=headers,
                json={
                    "name": "quoting.build_report",
                    "args": ["acme", "2026-12"],
                    "options": tenant_options("acme", delay=3600),
                },
            )
            print("schedule report:", later.status_code, later.json()["job"]["state"])
            with anyio.fail_after(10):
                while len(resources.outbox) < 2:
                    await anyio.sleep(0.02)
            with anyio.fail_after(10):  # its completion may still be on its way to the store
                while (
                    status := (await client.get(f"/api/jobs/{created[0]}", headers=headers)).json()
                )["state"] != "complete":
                    await anyio.sleep(0.02)
            progress = f"progress {status['progress']} ({status['progress_message']})"
            print(f"status: {status['state']}, {progress}")
            acme = (await client.get("/api/jobs?partition=acme", headers=headers)).json()["jobs"]
            print("acme's jobs:", sorted(job["name"].split(".")[1] for job in acme))
            with anyio.fail_after(10):
                while not (
                    dead := (await client.get("/api/jobs?state=dead", headers=headers)).json()[
                        "jobs"
                    ]
                ):
                    await anyio.sleep(0.02)
            print(f"dead: {dead[0]['name']} - {dead[0]['error']['message']}")
            MATERIALS["unobtainium"] = Decimal("99.00")  # the price list was fixed
            retried = await client.post(f"/api/jobs/{dead[0]['id']}/retry", headers=headers)
            print("retry:", retried.status_code, retried.json()["state"])
            with anyio.fail_after(10):
                while "acme-odd" not in resources.quotes:
                    await anyio.sleep(0.02)
            print("after the retry: quote", resources.quotes["acme-odd"].price)
            cancelled = await client.post(
                f"/api/jobs/{later.json()['job']['id']}/cancel", headers=headers
            )
            print("cancel report:", cancelled.json()["state"])
            health = await client.get("/healthz", headers=headers)
            print("health:", health.status_code, health.json()["healthy"])
            metrics = (await client.get("/metrics", headers=headers)).text
            print(
                "metrics:",
                len([line for line in metrics.splitlines() if line.startswith("asyncjobs_")]),
                "samples",
            )
            audit = (await client.get("/api/audit?limit=3", headers=headers)).json()["entries"]
            print("audit:", [f"{e['actor']} {e['action']}" for e in reversed(audit)])
        MATERIALS.pop("unobtainium", None)


def main() -> None:
    parser = argparse.ArgumentParser(description="a quoting service on asyncjobs")
    parser.add_argument("--url", help=f"store URL (default $ASYNCJOBS_URL or {DEFAULT_URL})")
    parser.add_argument("--serve", action="store_true", help="serve the HTTP API with uvicorn")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--lease", type=float, default=10.0, help="seconds a claimed job is held")
    args = parser.parse_args()
    if not args.serve:
        anyio.run(demo, args.url)
        return
    import uvicorn

    token = os.environ.get("QUOTING_TOKEN") or secrets.token_urlsafe(16)
    if "QUOTING_TOKEN" not in os.environ:
        print(f"QUOTING_TOKEN={token}")
    service = create_runtime(args.url, lease=args.lease)
    uvicorn.run(create_app(service, {token: Identity("ops", "admin")}), port=args.port)


if __name__ == "__main__":
    main()
