"""Asyncio helpers shared by the engine and the judge's HTTP client."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["bounded"]

T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """Await ``awaitable`` for at most ``seconds``; raises ``TimeoutError`` after that.

    On Python 3.11+ this runs in the calling task (``asyncio.timeout``); ``asyncio.wait_for``
    there wraps the awaitable in a task of its own, which costs a task and a trip through the
    event loop's ready queue each time.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10
