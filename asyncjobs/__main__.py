"""``python -m asyncjobs``: the same as the ``asyncjobs`` command."""

from __future__ import annotations

from .cli import run

run()
