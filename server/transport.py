"""Sending instructions to supernodes and collecting replies with a short polling interval.

Flower's ``Grid.send_and_receive`` sleeps 0.1 s between polls; with dozens of rounds per epoch
that sleep dominates, so replies are pulled every 0.1–1 ms (a poll is a cheap state lookup).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from flwr.app import Message
from flwr.serverapp import Grid

POLL_START_S = 0.0001
POLL_MAX_S = 0.001


def exchange(grid: Grid, messages: Sequence[Message], timeout_s: float) -> dict[int, Message]:
    """Push ``messages`` and return the replies by destination node id (missing ones time out)."""
    ids = {mid: msg.metadata.dst_node_id for mid, msg in zip(grid.push_messages(messages), messages)}
    pending, replies = set(ids), {}
    deadline, pause = time.monotonic() + timeout_s, POLL_START_S
    while pending and time.monotonic() < deadline:
        got = list(grid.pull_messages(pending))
        for reply in got:
            replies[ids[reply.metadata.reply_to_message_id]] = reply
            pending.discard(reply.metadata.reply_to_message_id)
        if pending:
            time.sleep(pause)
            pause = POLL_START_S if got else min(2 * pause, POLL_MAX_S)
    return replies


def wait_for_nodes(grid: Grid, count: int, timeout_s: float) -> list[int]:
    """The ids of ``count`` registered supernodes, waiting up to ``timeout_s`` for them."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes[:count]
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {count} supernodes registered within {timeout_s:.0f} s; "
                               "start as many supernodes as shards (options.num-supernodes / --shards)")
        time.sleep(0.05)
