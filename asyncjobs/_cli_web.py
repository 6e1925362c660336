"""``asyncjobs web``: the admin API and dashboard on a store, served standalone by uvicorn.

Credentials come from the environment (``ASYNCJOBS_WEB_TOKEN`` for the admin
role, ``ASYNCJOBS_WEB_VIEWER_TOKEN`` for read-only), never from the command
line, where other users of the machine could read them.
"""

from __future__ import annotations

import argparse
import getpass
import os
from typing import Any

__all__ = ["add_web_command"]

_DEFAULT_BIND = "127.0.0.1:8700"


def add_web_command(commands: Any) -> None:
    """Register ``asyncjobs web`` on the ``asyncjobs`` parser's subcommands."""
    web = commands.add_parser(
        "web", help="serve the admin API and dashboard (needs asyncjobs[web])"
    )
    web.add_argument("--url", default=None, help="the store (default $ASYNCJOBS_URL)")
    web.add_argument(
        "--bind",
        default=_DEFAULT_BIND,
        metavar="HOST:PORT",
        help=f"where to listen ({_DEFAULT_BIND})",
    )
    web.add_argument(
        "--allow-all-unsafe",
        action="store_true",
        help="serve everyone without a token, as the OS user with the admin role",
    )
    web.set_defaults(command=_web)


async def _web(args: argparse.Namespace) -> int:
    from ._admin import Admin
    from ._exceptions import ConfigurationError
    from .integrations.prometheus import _address

    try:
        import uvicorn

        from .web import Identity, admin_app, allow_all_unsafe, bearer_tokens
    except ImportError as exc:
        raise ConfigurationError(
            f"asyncjobs web needs the web extra: pip install 'asyncjobs[web]' ({exc})"
        ) from None
    url = args.url or os.environ.get("ASYNCJOBS_URL")
    if not url:
        raise ConfigurationError("give the store with --url or $ASYNCJOBS_URL")
    user = getpass.getuser()
    tokens = {
        token: Identity(f"{user}:{role}" if role == "viewer" else user, role)
        for token, role in (
            (os.environ.get("ASYNCJOBS_WEB_TOKEN"), "admin"),
            (os.environ.get("ASYNCJOBS_WEB_VIEWER_TOKEN"), "viewer"),
        )
        if token
    }
    if args.allow_all_unsafe:
        auth: Any = allow_all_unsafe(user)
    elif tokens:
        auth = bearer_tokens(tokens)
    else:
        raise ConfigurationError(
            "set ASYNCJOBS_WEB_TOKEN (admin) and/or ASYNCJOBS_WEB_VIEWER_TOKEN (read-only) to "
            "tokens of 16 characters or more, or pass --allow-all-unsafe"
        )
    host, port = _address(args.bind)
    async with Admin.open(url, actor=user) as admin:
        config = uvicorn.Config(admin_app(admin, auth=auth), host=host, port=port, log_level="info")
        await uvicorn.Server(config).serve()
    return 0
