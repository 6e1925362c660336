"""The API against its own OpenAPI document, with schemathesis: generated valid and invalid
input for every operation, through uvicorn, on SQLite and Redis.

Every response must be documented (status, content type, schema), no input may cause a
5xx, input that breaks the schema must get a 4xx, and a request without the token a 401.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode

from asyncjobs import JobRuntime
from asyncjobs.web import admin_app, openapi_document
from tests.backends.conftest import make_backend
from tests.web.conftest import ADMIN_TOKEN, define_jobs, tokens
from tests.web.server import serve_in_thread

#: Generated cases per operation and generation mode.
EXAMPLES = 20
DOC = openapi_document()


def test_the_document_is_valid_openapi() -> None:
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    operations = [op for item in DOC["paths"].values() for op in item.values()]
    assert len({op["operationId"] for op in operations}) == len(operations) == 23
    for warning in schemathesis.openapi.from_dict(DOC).iter_schema_warnings():
        pytest.fail(f"schemathesis warns about the document: {warning}")


def run_cases(
    operation: Any, mode: GenerationMode, url: str, cases: Counter[str], statuses: Counter[int]
) -> None:
    """Run EXAMPLES generated cases of *operation* in *mode* against the server at *url*."""
    # Arguments that do not bind to the handler (or name an unconfigured queue) are 422
    # though the document cannot describe each job's signature: enqueue alone may reject
    # schema-valid input.
    excluded = (
        [schemathesis.checks.positive_data_acceptance]
        if operation.label == "POST /api/jobs"
        else []
    )

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call_and_validate(
            base_url=url,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
            excluded_checks=excluded,
        )
        cases[mode.value] += 1
        statuses[response.status_code] += 1

    check()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_every_operation_conforms_to_the_document(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    backend = make_backend(store, tmp_path, request)
    runtime = JobRuntime(backend, queues={"default": 4}, shutdown_grace=0.05)
    define_jobs(runtime)

    @runtime.cron("0 3 * * *", name="nightly")
    async def nightly() -> None: ...

    @asynccontextmanager
    async def started() -> AsyncIterator[JobRuntime]:
        async with runtime:
            await runtime.enqueue("add", 1, 2)
            await runtime.enqueue("fail", "boom")
            yield runtime

    schema = schemathesis.openapi.from_dict(DOC)
    cases: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    # Served at the root, as `asyncjobs web` serves it: a host app's Mount does not match
    # paths holding a newline (its pattern's "." stops there), which generated ids may do.
    with serve_in_thread(started, lambda rt: admin_app(rt, auth=tokens())) as (url, _, _call):
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run_cases(operation, mode, url, cases, statuses)
    total = sum(cases.values())
    print(f"\n{store}: {total} cases ({dict(cases)}), statuses {dict(sorted(statuses.items()))}")
    assert cases["positive"] >= 23 * 5
    assert cases["negative"] >= 50
