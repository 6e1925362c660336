"""The ``asyncjobs`` command: demo, worker, status, and the store commands.

Every command but ``demo`` and ``worker`` works on the store alone: ``status``
opens the backend at ``--url`` (or ``$ASYNCJOBS_URL``) with an
``enqueue``-role runtime, which runs no jobs; ``jobs``, ``queues``,
``schedules``, ``workers``, ``explain``, ``health`` and ``audit`` (in
:mod:`asyncjobs._cli_admin`) with an :class:`~asyncjobs._admin.Admin`. So they
are safe to point at a store that workers are using. Errors print one line
to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TextIO

import anyio
from rich.console import Console
from rich.logging import RichHandler

from ._cli_admin import (
    EXIT_ERROR,
    EXIT_OK,
    CLIError,
    add_store_commands,
    expand_aliases,
    store_url,
)
from ._cli_admin import add_url as _add_url
from ._cli_admin import scrub as _scrub
from ._cli_web import add_web_command
from ._dispatcher import SHUTDOWN_BOUND
from ._exceptions import AsyncJobsError, UnknownQueueError
from ._runtime import JobRuntime
from ._snapshot import format_duration, take_snapshot
from .console import live, render
from .integrations._worker import observe_worker
from .integrations.logs import JSONFormatter

__all__ = ["main"]

logger = logging.getLogger("asyncjobs")

_EXIT_INTERRUPTED = 130
#: The exit status when shutdown overran its deadline (a handler ignored cancellation).
_EXIT_SHUTDOWN_OVERRAN = 70
_DEMO_URL = "sqlite:///asyncjobs-demo.db"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``asyncjobs`` command line.

    :param argv: the arguments after the program name (default: ``sys.argv[1:]``).
    :returns: the exit status: 0 on success, 1 for a failed health check, 2 on
        an error (reported on stderr in one line, without a traceback), 130
        when interrupted.
    """
    parser = _parser()
    try:
        args = parser.parse_args(expand_aliases(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse reports usage errors itself, with status 2
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    command: Callable[[argparse.Namespace], Awaitable[int]] = args.command
    # Whichever URL a message may quote, its password is scrubbed from it.
    url: str | None = getattr(args, "url", None) or os.environ.get("ASYNCJOBS_URL")
    with warnings.catch_warnings():
        # Warnings (an unsafe SQLite build, say) are worth seeing, as one line.
        warnings.showwarning = _show_warning
        try:
            return anyio.run(command, args)
        except KeyboardInterrupt:
            return _EXIT_INTERRUPTED
        except Exception as exc:
            # An error raised inside `async with runtime` comes out of its task group
            # wrapped in an exception group: report the error, not the wrapping.
            error = _reportable(exc)
            if error is None:
                raise
            print(f"asyncjobs: error: {_scrub(str(error), url)}", file=sys.stderr)
            return EXIT_ERROR


def run() -> NoReturn:
    """The process entry point (``asyncjobs``, ``python -m asyncjobs``): :func:`main`, then exit.

    A job handler running in a thread cannot be cancelled; at shutdown its job
    was handed back, and the thread is abandoned. Python would wait for such a
    thread before exiting, so the process leaves without joining it.
    """
    status = main()
    abandoned = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and thread.is_alive() and not thread.daemon
    ]
    if abandoned:
        logger.warning(
            "exiting with %d job handler thread(s) still running (their jobs were handed back)",
            len(abandoned),
        )
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(status)
    sys.exit(status)


def _reportable(exc: BaseException) -> BaseException | None:
    """Return the error to report in one line, or ``None`` for a bug (shown with its traceback).

    Library errors, command-line errors, OS errors (a store that cannot be
    reached or read) and a store's driver that is not installed (its import
    error says which extra to install) are the user's to fix; anything else is ours.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, ImportError) and "pip install 'asyncjobs[" in str(exc):
        return exc
    return exc if isinstance(exc, AsyncJobsError | CLIError | OSError) else None


# --------------------------------------------------------------------------- arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncjobs",
        description="Run and inspect asyncjobs queues. Store commands take --url "
        "(or $ASYNCJOBS_URL): sqlite:///jobs.db, redis://host:6379/0, ...",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    demo = commands.add_parser("demo", help="run a demo workload on a live console")
    demo.add_argument(
        "--url", default=_DEMO_URL, help=f"where the demo stores its jobs (default {_DEMO_URL})"
    )
    demo.add_argument("--seconds", type=_positive_float, help="stop after this many seconds")
    demo.add_argument("--refresh", type=_positive_float, default=0.5, help=argparse.SUPPRESS)
    demo.set_defaults(command=_demo)

    worker = commands.add_parser("worker", help="run the jobs of an app's runtime")
    worker.add_argument("target", metavar="MODULE:ATTRIBUTE", help="e.g. myapp.jobs:runtime")
    worker.add_argument("--queues", type=_name_list, help="run only these queues (comma-separated)")
    worker.add_argument("--console", action="store_true", help="show the live console")
    worker.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="logging level (default INFO)",
    )
    worker.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text lines, or one JSON object a line with each job record's fields (default text)",
    )
    worker.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (needs asyncjobs[prometheus])",
    )
    worker.set_defaults(command=_worker)

    status = commands.add_parser("status", help="show queues, running jobs and failures")
    _add_url(status)
    status.add_argument("--watch", action="store_true", help="keep refreshing until Ctrl-C")
    status.add_argument(
        "--refresh", type=_positive_float, default=1.0, help="seconds between refreshes"
    )
    status.set_defaults(command=_status)

    add_store_commands(commands)
    add_web_command(commands)
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _name_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one queue name")
    return names


# --------------------------------------------------------------------------- plumbing


def _store_runtime(args: argparse.Namespace) -> JobRuntime:
    return JobRuntime(store_url(args), role="enqueue")


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"asyncjobs: warning: {message}", file=file or sys.stderr)


async def _serve(runtime: JobRuntime, body: Callable[[], Awaitable[None]]) -> None:
    """Start *runtime*, run *body* until it returns or SIGINT/SIGTERM arrives, then stop.

    Only *body* is cancelled by the first signal: the runtime's graceful
    shutdown then runs in a scope that is not cancelled (a cancelled one would
    cut it short and leave the store's connections open). A second signal
    during that shutdown exits at once; the jobs still running are run again
    by a worker once their leases expire.
    """
    stop = anyio.CancelScope()
    async with anyio.create_task_group() as watchers:
        # Signal handlers can only be installed from the main thread; elsewhere
        # (main() called from a thread) the caller stops the body its own way.
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread:
            watchers.start_soon(_watch_signals, stop, runtime.shutdown_grace)
        try:
            async with runtime:
                with stop:
                    await body()
        finally:
            if in_main_thread:
                # Shutdown ended in time: disarm its deadline (main() may be called again).
                signal.setitimer(signal.ITIMER_REAL, 0)
        watchers.cancel_scope.cancel()


async def _watch_signals(stop: anyio.CancelScope, grace: float) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not stop.cancel_called:
                logger.info(
                    "received %s, shutting down (running jobs get %s to finish; "
                    "send it again to stop now)",
                    name,
                    format_duration(grace),
                )
                stop.cancel()
                _arm_shutdown_deadline(grace + SHUTDOWN_BOUND)
                continue
            logger.warning("received %s again: exiting without waiting for running jobs", name)
            sys.stdout.flush()
            sys.stderr.flush()
            # Waiting on is what was refused, and unwinding would wait on the store's
            # connection threads: leave now, like a crash the leases recover from.
            os._exit(_EXIT_INTERRUPTED)


def _arm_shutdown_deadline(seconds: float) -> None:
    """Exit the process *seconds* from now if shutdown has not ended by then.

    A handler that swallows its cancellation would otherwise keep the worker
    alive forever. SIGALRM, not a task or a thread: it also fires while such a
    handler blocks the event loop. The job it held runs again once its lease
    expires, as after a crash.
    """

    def overran(signum: int, frame: object) -> None:
        os.write(
            2,
            b"asyncjobs: shutdown overran shutdown_grace plus its bound (a handler ignores "
            b"cancellation); exiting now, its job runs again after its lease expires\n",
        )
        os._exit(_EXIT_SHUTDOWN_OVERRAN)

    signal.signal(signal.SIGALRM, overran)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _stdout() -> Console:
    return Console(highlight=False)


# --------------------------------------------------------------------------- commands


async def _demo(args: argparse.Namespace) -> int:
    from ._demo import build_demo_runtime, run_demo

    runtime = build_demo_runtime(args.url)
    console = _stdout()

    async def body() -> None:
        await run_demo(runtime, seconds=args.seconds, console=console, refresh=args.refresh)

    await _serve(runtime, body)
    console.print(
        "demo stopped; its jobs stay in the store. Look again with:\n"
        f"  {_self_command()} status --url {shlex.quote(_scrub(args.url, args.url))}",
        soft_wrap=True,  # one line, to copy whole, however narrow the terminal
    )
    return EXIT_OK


def _self_command() -> str:
    """How to run ``asyncjobs`` again from this shell: the command this process was
    started as, when that is on PATH or was given as a path, else ``python -m asyncjobs``."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "asyncjobs":
        on_path = shutil.which("asyncjobs")
        if on_path is not None and os.path.realpath(on_path) == os.path.realpath(script):
            return "asyncjobs"
        if os.sep in script:  # e.g. .venv/bin/asyncjobs, as the README runs it
            return shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m asyncjobs"


async def _worker(args: argparse.Namespace) -> int:
    runtime = _load_runtime(args.target)
    if args.queues:
        _serve_only(runtime, args.queues)
    # Whatever role the app gave it (a web app's runtime may be enqueue-only), this
    # process is the worker.
    runtime.role = "worker"
    console = _stdout() if args.console else None
    _configure_logging(args.log_level, console, json_lines=args.log_format == "json")

    async def body() -> None:
        logger.info(
            "worker %s started on %r, queues %s",
            runtime.worker_id,
            runtime.backend,
            ", ".join(f"{name}={limit}" for name, limit in runtime.queues.items()),
        )
        if console is not None:
            await live(runtime, console=console)
        else:
            await anyio.sleep_forever()

    async with observe_worker(runtime, metrics=args.metrics, log_format=args.log_format):
        await _serve(runtime, body)
    logger.info("worker %s stopped", runtime.worker_id)
    return EXIT_OK


def _load_runtime(target: str) -> JobRuntime:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise CLIError(f"expected MODULE:ATTRIBUTE such as myapp.jobs:runtime, not {target!r}")
    # Like `python -m`: the app's modules are importable from where the worker starts.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CLIError(f"cannot import {module_name!r}: no module named {exc.name!r}") from None
        raise
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CLIError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(value, JobRuntime):
        raise CLIError(f"{target} is a {type(value).__name__}, not a JobRuntime")
    return value


def _serve_only(runtime: JobRuntime, queues: Sequence[str]) -> None:
    unknown = [name for name in queues if name not in runtime.queues]
    if unknown:
        raise UnknownQueueError(
            f"--queues names {', '.join(map(repr, unknown))}, not configured in the runtime "
            f"(configured: {', '.join(runtime.queues)})"
        )
    # The runtime has no "serve only these queues" switch yet, so narrow its slots:
    # the dispatcher claims from the queues its slots hold.
    runtime.slots = runtime.queue_plan.slots(only=queues)


#: The name of the handler the worker installs, so a second set-up in one process
#: (tests call main() many times) replaces it instead of printing every line twice.
_HANDLER_NAME = "asyncjobs.cli"


def _configure_logging(level: str, console: Console | None, *, json_lines: bool = False) -> None:
    """Print the ``asyncjobs`` logger's records at *level* and above.

    Only the ``asyncjobs`` logger gets *level*: the root logger keeps its own
    (WARNING unless the app set one), so ``--log-level DEBUG`` does not turn on
    other libraries' debug output. That matters beyond noise: aiosqlite's
    debug lines quote every SQL statement with its parameters, job payloads
    and results included.
    """
    handler: logging.Handler
    if console is not None:
        # Through the live console's own Console, so log lines print above the view.
        handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if json_lines:
        handler.setFormatter(JSONFormatter())
    handler.set_name(_HANDLER_NAME)
    package = logging.getLogger("asyncjobs")
    _replace_handler(package, handler)
    package.setLevel(level)
    # The handler above prints these records; passing them on to a root handler
    # as well would print each of them twice.
    package.propagate = False
    root = logging.getLogger()
    if not [existing for existing in root.handlers if existing.get_name() != _HANDLER_NAME]:
        # An app that set up no logging of its own still sees other libraries'
        # warnings, in the same format; their level stays the root's (or the one
        # the app gives a logger, e.g. logging.getLogger("aiosqlite").setLevel(...)).
        _replace_handler(root, handler)


def _replace_handler(logger: logging.Logger, handler: logging.Handler) -> None:
    for existing in list(logger.handlers):
        if existing.get_name() == _HANDLER_NAME:
            logger.removeHandler(existing)
    logger.addHandler(handler)


async def _status(args: argparse.Namespace) -> int:
    runtime = _store_runtime(args)
    console = _stdout()
    if args.watch:

        async def body() -> None:
            await live(runtime, refresh=args.refresh, console=console)

        await _serve(runtime, body)
        # The view runs until a signal stops it: an interrupted command.
        return _EXIT_INTERRUPTED
    else:
        async with runtime:
            console.print(render(await take_snapshot(runtime)))
    return EXIT_OK
