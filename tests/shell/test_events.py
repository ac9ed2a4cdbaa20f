"""The live event fan-out: every subscriber gets what is published after it subscribed; one that
falls behind is dropped (its stream ends), never waited for."""

from __future__ import annotations

import pytest
import trio

from freellm.shell.events import Events


async def test_every_subscriber_gets_each_event_in_order() -> None:
    events = Events()
    events.publish("request", {"n": 0})  # nobody listens yet: it goes nowhere
    with events.subscribe() as first, events.subscribe() as second:
        assert events.subscribers == 2
        events.publish("request", {"n": 1})
        events.publish("quotas", {"n": 2})
        for channel in (first, second):
            assert await channel.receive() == ("request", {"n": 1})
            assert await channel.receive() == ("quotas", {"n": 2})
    assert events.subscribers == 0


async def test_a_subscriber_that_falls_behind_is_dropped_and_the_others_go_on() -> None:
    events = Events(buffer=2)
    with events.subscribe() as slow, events.subscribe() as quick:
        for n in range(2):
            events.publish("request", {"n": n})
            assert (await quick.receive())[1] == {"n": n}
        events.publish("request", {"n": 2})  # the slow one's buffer is full: it is dropped
        assert events.subscribers == 1
        assert (await quick.receive())[1] == {"n": 2}
        assert [(await slow.receive())[1]["n"] for _ in range(2)] == [0, 1]
        with pytest.raises(trio.EndOfChannel):
            await slow.receive()
