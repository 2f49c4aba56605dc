"""Single flight: one task does a piece of work while every concurrent caller awaits it.

Metadata discovery, JWKS refreshes and introspection all need the same four
things: one task at a time (per key), shielded so a caller that gives up does
not cancel the work others wait on, forgotten once its event loop is gone (a
test client's loop, say), and cancelled at shutdown.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Hashable, Iterable
from typing import Any, Generic, TypeVar

__all__ = ["KeyedFlight", "SingleFlight"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

Work = Callable[[], Coroutine[Any, Any, T]]


class SingleFlight(Generic[T]):
    """One task at a time, joined through a shield so a caller that gives up cannot cancel it,
    forgotten once done or its loop is gone, its exception always retrieved so none goes
    "never retrieved"."""

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: asyncio.Task[T] | None = None

    def current(self) -> asyncio.Task[T] | None:
        """The task in flight on this event loop, if any."""
        task = self._task
        if task is not None and (task.done() or task.get_loop() is not asyncio.get_running_loop()):
            self._task = task = None
        return task

    def start(self, work: Work[T], *, name: str | None = None) -> asyncio.Task[T]:
        """The task in flight, or a new one running ``work()`` (called only then)."""
        task = self.current()
        if task is None:
            task = self._task = asyncio.get_running_loop().create_task(work(), name=name)
            task.add_done_callback(_retrieve)
        return task

    async def join(self, task: asyncio.Task[T]) -> T:
        """Await ``task`` shielded: a caller that gives up must not cancel the work others await."""
        return await asyncio.shield(task)

    async def run(self, work: Work[T], *, name: str | None = None) -> T:
        """Join the task in flight, or one started running ``work()``."""
        return await self.join(self.start(work, name=name))

    async def aclose(self) -> None:
        """Cancel the task in flight and wait for it to unwind (at shutdown)."""
        task = self.current()
        self._task = None
        await _cancel(() if task is None else (task,))


class KeyedFlight(Generic[K, T]):
    """One task per key, awaited through a shield so a caller that gives up cannot cancel it,
    replaced when its loop is gone and dropped when it lands with its exception retrieved."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[T]] = {}

    async def run(self, key: K, work: Work[T]) -> T:
        """Await the task in flight for ``key``, or one started running ``work()``."""
        loop = asyncio.get_running_loop()
        task = self._tasks.get(key)
        if task is None or task.get_loop() is not loop:
            task = self._tasks[key] = loop.create_task(work())
            task.add_done_callback(functools.partial(self._landed, key))
        # shield: a caller that gives up must not cancel the work others are waiting on.
        return await asyncio.shield(task)

    def _landed(self, key: K, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        _retrieve(task)

    async def aclose(self) -> None:
        """Cancel every task in flight and wait for them to unwind (at shutdown)."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await _cancel(tasks)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark an outcome seen: no "exception was never retrieved" when every waiter left."""
    if not task.cancelled():
        task.exception()


async def _cancel(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel this loop's unfinished tasks and wait for them; another loop's are just dropped."""
    loop = asyncio.get_running_loop()
    pending = {t for t in tasks if not t.done() and t.get_loop() is loop}
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
