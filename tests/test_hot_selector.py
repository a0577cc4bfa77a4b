"""The daemon's selector (pmip_agent/net/hot_selector.py), with real sockets under a real
asyncio loop: watched sockets' handlers run from epoll's report, everything else the loop
watches still goes through the loop, and callbacks a handler schedules run."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from typing import Any

from pmip_agent.net.hot_selector import HotSelector


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    return a, b


def _run(
    loop: asyncio.AbstractEventLoop, scenario: Coroutine[Any, Any, None], *socks: socket.socket
) -> None:
    """Run ``scenario`` on ``loop``, then close the loop and ``socks`` whatever happened."""
    try:
        loop.run_until_complete(scenario)
    finally:
        loop.close()
        for sock in socks:
            sock.close()


def test_watched_and_loop_readers_both_run() -> None:
    hot = HotSelector()
    loop = asyncio.SelectorEventLoop(hot)
    got: list[str] = []
    hot_rx, hot_tx = _pair()
    plain_rx, plain_tx = _pair()

    def on_hot() -> None:
        got.append("hot:" + hot_rx.recv(64).decode())
        loop.call_soon(got.append, "scheduled by the handler")

    def on_plain() -> None:
        got.append("plain:" + plain_rx.recv(64).decode())

    async def scenario() -> None:
        hot.watch(hot_rx.fileno(), on_hot)
        loop.add_reader(plain_rx.fileno(), on_plain)
        hot_tx.send(b"1")
        plain_tx.send(b"2")
        for _ in range(50):
            if len(got) == 3:
                break
            await asyncio.sleep(0.01)
        hot.unwatch(hot_rx.fileno())
        hot_tx.send(b"3")  # no longer watched: stays queued
        await asyncio.sleep(0.05)
        loop.remove_reader(plain_rx.fileno())

    _run(loop, scenario(), hot_rx, hot_tx, plain_rx, plain_tx)
    assert sorted(got) == ["hot:1", "plain:2", "scheduled by the handler"]
    assert got.index("hot:1") < got.index("scheduled by the handler")


def test_unwatching_an_unknown_descriptor_is_harmless() -> None:
    hot = HotSelector()
    try:
        hot.unwatch(12345)
        assert hot.get_map() is not None and len(hot.get_map()) == 0
    finally:
        hot.close()


def test_a_handler_may_unwatch_another_ready_socket() -> None:
    """Both sockets are ready in one wake-up and the first handler unwatches the other:
    the loop must not be handed the unwatched socket's key (it is not one of its own)."""
    hot = HotSelector()
    loop = asyncio.SelectorEventLoop(hot)
    (a_rx, a_tx), (b_rx, b_tx) = _pair(), _pair()
    got: list[str] = []

    def on_a() -> None:
        got.append("a:" + a_rx.recv(64).decode())
        hot.unwatch(b_rx.fileno())

    def on_b() -> None:
        got.append("b:" + b_rx.recv(64).decode())
        hot.unwatch(a_rx.fileno())

    async def scenario() -> None:
        hot.watch(a_rx.fileno(), on_a)
        hot.watch(b_rx.fileno(), on_b)
        a_tx.send(b"1")
        b_tx.send(b"2")
        await asyncio.sleep(0.05)

    _run(loop, scenario(), a_rx, a_tx, b_rx, b_tx)
    assert got in (["a:1"], ["b:2"])  # whichever ran first took the other one away
