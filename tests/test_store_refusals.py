"""A reading the store refuses costs only itself: the writer isolates it, writes the rest, dead-letters it.

Regression tests for issue 10's first finding: the writer used to discard
a whole batch (up to 5,000 good readings from every source) when the
engine refused it. Here the edge check is bypassed on purpose (readings go
straight to the writer), as a reading the screen does not know to refuse
would: the real stores must refuse exactly it.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from app.model import Reading
from app.store.embedded import EmbeddedStore
from app.store.influx import InfluxStore
from app.store.rejected import RejectedLog
from app.store.writer import StoreWriter
from tests.helpers import until
from tests.servers import InfluxDB
from tests.test_influx_store import raw_write

T0 = 1_795_000_000_000_000_000
BATCH = 5000
BAD_AT = 3217


async def write_through(writer: StoreWriter, batch: list[Reading]) -> None:
    """Give the writer one batch and wait until it has handled every reading."""
    task = asyncio.create_task(writer.run())
    try:
        writer.accept(batch)
        await until(lambda: writer.written + writer.rejected >= len(batch), timeout=30,
                    what="every reading written or refused")
    finally:
        await writer.stop()
        await asyncio.wait_for(task, 30)


async def test_embedded_store_refuses_one_reading_of_5000_and_keeps_4999(tmp_path: Path):
    batch = [Reading(f"d{i % 50}", "level", T0 + i, float(i), tags={"site": "nord"}) for i in range(BATCH)]
    batch[BAD_AT] = Reading("d\ud800", "level", T0 + BAD_AT, 1.0)  # text DuckDB cannot hold
    store = EmbeddedStore(tmp_path / "data")
    await store.open()
    writer = StoreWriter(store, spool_dir=tmp_path / "spool", rejected_dir=tmp_path / "rejected",
                         batch_size=BATCH, flush_interval=0.02)
    try:
        await write_through(writer, batch)
        assert await store.count() == BATCH - 1
        assert {s.key for s in await store.series()} == {f"d{i}/level" for i in range(50)}
    finally:
        await store.close()
    assert (writer.written, writer.rejected) == (BATCH - 1, 1)
    assert writer.health()["rejected"]["by_kind"] == {"refused_by_store": 1}
    kept = RejectedLog(tmp_path / "rejected").read()
    assert len(kept) == 1 and kept[0]["device"] == "d\ud800" and kept[0]["time_ns"] == T0 + BAD_AT
    assert "Unicode" in kept[0]["reason"] or "surrogate" in kept[0]["reason"], kept[0]["reason"]
    assert writer.spool is not None and len(writer.spool) == 0

    # The catalogue the failed attempts saw is not the one kept: a reopened store lists the good series only.
    reopened = EmbeddedStore(tmp_path / "data")
    await reopened.open()
    try:
        assert {s.key for s in await reopened.series()} == {f"d{i}/level" for i in range(50)}
        assert await reopened.count() == BATCH - 1
    finally:
        await reopened.close()


@pytest.fixture
async def influx_store(influxdb: InfluxDB):
    s = InfluxStore(influxdb.url, database=influxdb.database, measurement=f"r_{uuid.uuid4().hex[:10]}")
    await s.open()
    yield s
    await s.close()


async def test_influxdb_refuses_one_reading_of_5000_and_keeps_4999(influx_store: InfluxStore, influxdb: InfluxDB,
                                                                   tmp_path: Path):
    # Field types are fixed per shard (a week): a number "quality" written in 2001 makes a reading of
    # that week with a string quality a type conflict, refused by InfluxDB itself with its reason.
    old = 978_307_200_000_000_000
    raw_write(influxdb, f"{influx_store.measurement},device=seed,metric=m value=1,quality=1 {old}")
    batch = [Reading(f"d{i % 50}", "level", T0 + i, float(i)) for i in range(BATCH)]
    batch[BAD_AT] = Reading("late", "level", old + 1, 1.0)
    writer = StoreWriter(influx_store, spool_dir=tmp_path / "spool", rejected_dir=tmp_path / "rejected",
                         batch_size=BATCH, flush_interval=0.02)
    await write_through(writer, batch)
    assert (writer.written, writer.rejected) == (BATCH - 1, 1)
    assert await influx_store.count("late/level") == 0
    assert sum([await influx_store.count(f"d{i}/level") for i in range(50)]) == BATCH - 1
    kept = RejectedLog(tmp_path / "rejected").read()
    assert [(k["device"], k["time_ns"]) for k in kept] == [("late", old + 1)]
    assert "field type conflict" in kept[0]["reason"]


async def test_influxdb_names_what_line_protocol_cannot_carry_and_writes_the_rest(
        influx_store: InfluxStore, tmp_path: Path):
    batch = [Reading("d", "level", T0 + i, float(i)) for i in range(100)]
    batch[40] = Reading("d", "level", T0 + 40, float("nan"))
    batch[70] = Reading("trailing\\", "level", T0 + 70, 1.0)
    writer = StoreWriter(influx_store, rejected_dir=tmp_path / "rejected", flush_interval=0.02)
    await write_through(writer, batch)
    assert (writer.written, writer.rejected) == (98, 2)
    assert await influx_store.count("d/level") == 98
    assert sorted(k["time_ns"] - T0 for k in RejectedLog(tmp_path / "rejected").read()) == [40, 70]
