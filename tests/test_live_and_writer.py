"""The live cache's rings and the store writer's batching, without servers."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from app.live import LiveCache, SeriesRing
from app.model import Envelope, Reading
from app.store.base import StoreEngine
from app.store.writer import StoreWriter


@given(st.integers(1, 300), st.integers(1, 700), st.integers(0, 700))
def test_ring_keeps_the_last_capacity_points_in_order(capacity, n, since):
    ring = SeriesRing("d", "m", capacity)
    for i in range(n):
        ring.append(Reading("d", "m", i, float(i)))
    times, values = ring.window()
    assert times.tolist() == list(range(max(0, n - capacity), n))
    assert len(ring.times) <= capacity
    new_t, _new_v, seq = ring.since(since)
    assert seq == n
    assert new_t.tolist() == list(range(max(since, n - capacity), n)) if since < n else new_t.tolist() == []
    assert ring.latest().value == float(n - 1)


def test_cache_grows_rings_lazily():
    cache = LiveCache(capacity=3600)
    cache.accept([Reading(f"d{i}", "m", 1, 1.0) for i in range(1000)])
    assert all(len(cache.get(f"d{i}/m").times) == 64 for i in range(1000))


class SlowEngine(StoreEngine):
    """An engine whose writes take a while, to see how the writer batches around them."""

    engine_type = ""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = asyncio.Event()

    async def write(self, batch):
        self.calls.append(len(batch))
        await asyncio.sleep(0.05)

    async def latest(self):
        return []

    async def series(self):
        return []

    async def envelope(self, key, start_ns, end_ns, buckets):
        return Envelope(key, 1, [], [], [], [])


async def test_readings_arriving_during_a_slow_write_do_not_multiply_writes():
    engine = SlowEngine()
    writer = StoreWriter(engine, batch_size=10_000, flush_interval=0.2)
    task = asyncio.create_task(writer.run())
    # 2,000 readings a little at a time over ~1 s, i.e. during many writes.
    for i in range(100):
        writer.accept([Reading("d", "m", i * 20 + k, 1.0) for k in range(20)])
        await asyncio.sleep(0.01)
    await writer.stop()
    await task
    assert sum(engine.calls) == 2000
    assert len(engine.calls) <= 12, engine.calls  # about one write per flush interval, not one per arrival
