"""Run a coroutine to completion from ordinary (synchronous) code, also where an event loop is
already running, as in Jupyter: there it runs on a loop of its own in a helper thread.

    >>> import asyncio
    >>> run_blocking(asyncio.sleep(0, result=42))
    42
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Coroutine, TypeVar

__all__ = ["run_blocking"]

T = TypeVar("T")


def run_blocking(coroutine: Coroutine[object, object, T]) -> T:
    """`coroutine`'s result, waiting for it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:  # this thread's loop is busy: use another one
        return pool.submit(asyncio.run, coroutine).result()
