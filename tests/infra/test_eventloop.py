"""Which event loop the services run on: uvloop unless EVENT_LOOP=asyncio or uvloop is missing, and
`run` returns the main coroutine's result (or raises its error) on that loop."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest
import uvloop

from infra import eventloop


async def loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def in_thread(main: object) -> object:
    """`eventloop.run(main)` on a thread of its own, away from the test session's loop."""
    out: list[object] = []

    def target() -> None:
        try:
            out.append(eventloop.run(main))  # type: ignore[arg-type]
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    return out[0]


@pytest.mark.parametrize("value", ["asyncio", "AsyncIO", "ASYNCIO"])
def test_event_loop_asyncio_turns_uvloop_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("EVENT_LOOP", value)
    assert not eventloop.use_uvloop()
    used = in_thread(loop_type())
    assert used is not uvloop.Loop and issubclass(used, asyncio.BaseEventLoop)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, "uvloop", "anything-else"])
def test_uvloop_is_used_by_default_when_installed(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("EVENT_LOOP", raising=False)
    else:
        monkeypatch.setenv("EVENT_LOOP", value)
    assert eventloop.use_uvloop()
    assert in_thread(loop_type()) is uvloop.Loop


def test_without_uvloop_installed_asyncio_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENT_LOOP", raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # the import fails as if it were not installed
    assert not eventloop.use_uvloop()
    used = in_thread(loop_type())
    assert used is not uvloop.Loop and issubclass(used, asyncio.BaseEventLoop)  # type: ignore[arg-type]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_run_returns_the_result_or_raises_the_error(monkeypatch: pytest.MonkeyPatch, loop: str) -> None:
    monkeypatch.setenv("EVENT_LOOP", loop)

    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 42

    async def fail() -> None:
        raise LookupError("boom")

    assert in_thread(answer()) == 42
    error = in_thread(fail())
    assert isinstance(error, LookupError) and str(error) == "boom"
