"""Shared fixtures: real servers, one per test module unless a test restarts them."""

from __future__ import annotations

import logging

import pytest
from hypothesis import settings

from tests.servers import InfluxDB, Mosquitto

# Property tests judge behaviour, not speed: on a loaded 2-core CI machine a 200 ms deadline per example
# fails at random (speed is measured in bench/, not in tests).
settings.register_profile("vigie", deadline=None)
settings.load_profile("vigie")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory):
    """A Mosquitto broker shared by the whole session (do not restart it)."""
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_mosquitto(tmp_path):
    """A broker of the test's own, free to be stopped and restarted."""
    server = Mosquitto(tmp_path / "mosquitto")
    server.directory.mkdir(exist_ok=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory):
    """An InfluxDB server shared by the whole session (do not restart it)."""
    server = InfluxDB(tmp_path_factory.mktemp("influxdb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_influxdb(tmp_path):
    """An InfluxDB of the test's own, free to be stopped and restarted."""
    d = tmp_path / "influxdb"
    d.mkdir()
    server = InfluxDB(d)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _quiet_libraries():
    for name in ("asyncua", "aiomqtt", "amqtt", "bokeh", "tornado.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def pytest_collection_modifyitems(config, items):
    """Run the in-process amqtt broker tests (tests/test_simulate.py) first.

    Late in a full run (after ~200 tests with in-process servers, Chromium and
    subprocesses), the embedded broker's restart test has hung or timed out
    (the simulators never noticed the broker gone), while it passes alone and
    after any single module we tried. The cause is not found yet (noted in the
    closing note); running these first keeps the suite meaningful meanwhile.
    """
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/test_simulate.py") else 1)


@pytest.fixture(params=["aiomqtt", "gmqtt"])
def mqtt_transport(request):
    """The MQTT source's transports (``transport:``): every test taking this runs on both."""
    return request.param
