"""The ``vigie`` command: ``demo``, ``serve``, ``check-config``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from urllib.parse import urlparse

from app.config import ConfigError, LoadedConfig, load_config
from app.gc_tuning import tune_for_server

log = logging.getLogger("vigie")

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def default_config_dir() -> Path:
    """Return ``./config`` when it exists, else the config shipped beside the package."""
    here = Path.cwd() / "config"
    return here if here.is_dir() else PACKAGE_ROOT / "config"


def _load_or_exit(directory: Path | None) -> LoadedConfig:
    try:
        return load_config(directory)
    except ConfigError as exc:
        print(f"vigie: the configuration in {directory} has {len(exc.problems)} problem(s):", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config directory; exit non-zero with every problem."""
    loaded = _load_or_exit(Path(args.directory))
    cfg = loaded.config
    print(f"{args.directory}: OK — store {cfg.store.engine}, {len(cfg.mqtt)} MQTT broker(s) "
          f"({sum(len(m.subscriptions) for m in cfg.mqtt)} subscriptions), {len(cfg.opcua)} OPC-UA server(s) "
          f"({sum(len(o.nodes) for o in cfg.opcua)} nodes)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the platform against the servers the config describes."""
    from app.runtime import Runtime
    from app.server import run_server

    loaded = _load_or_exit(Path(args.config))
    if args.address:
        loaded.config.server.address = args.address

    async def main() -> None:
        runtime = Runtime(loaded, base_dir=Path(args.data_root) if args.data_root else None)
        await run_server(runtime, port=args.port)

    tune_for_server()
    asyncio.run(main())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the zero-install demo: embedded broker, simulated PLC and sensors, embedded store."""
    from app.ingest.broker import EmbeddedBroker
    from app.ingest.plc_sim import PumpStationServer
    from app.ingest.simulate import Simulators
    from app.ingest.webcam_sim import WebcamSimulator
    from app.runtime import Runtime
    from app.server import run_server

    loaded = _load_or_exit(Path(args.config) if args.config else default_config_dir())
    cfg = loaded.config
    cfg.server.editing = True
    if args.address:
        cfg.server.address = args.address
    mqtt = cfg.mqtt[0]
    extras: list = [EmbeddedBroker(host=mqtt.host, port=mqtt.port)]
    for o in cfg.opcua:
        url = urlparse(o.url)
        extras.append(PumpStationServer(host=url.hostname or "127.0.0.1", port=url.port or 4840))
    sims = Simulators(mqtt.host, mqtt.port, period_s=args.period, seed="vigie-demo")
    extras.append(_SimulatorActor(sims))
    extras.append(_SimulatorActor(WebcamSimulator(mqtt.host, mqtt.port, sims.dams[:1], period_s=5 * args.period)))

    async def main() -> None:
        runtime = Runtime(loaded, base_dir=Path(args.data_root))
        await run_server(runtime, port=args.port, extras=extras)

    print(f"Vigie demo: open http://localhost:{args.port or cfg.server.port}/  (Ctrl-C to stop)")
    tune_for_server()
    asyncio.run(main())
    return 0


class _SimulatorActor:
    """Run the simulators as a task with a start/stop life."""

    def __init__(self, sims) -> None:
        self.sims = sims
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.sims.run(), name="simulators")

    async def stop(self) -> None:
        await self.sims.stop()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog="vigie", description="Vigie supervision platform")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the self-contained demo")
    demo.add_argument("--port", type=int, default=None, help="web port (default 5006)")
    demo.add_argument("--address", default=None, help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--config", default=None, help="demo config directory (default: shipped config/)")
    demo.add_argument("--data-root", default="var/demo", help="where the demo keeps its data")
    demo.add_argument("--period", type=float, default=1.0, help="simulator period in seconds")
    demo.set_defaults(func=cmd_demo)
    serve = sub.add_parser("serve", help="run against the servers in a config directory")
    serve.add_argument("--config", required=True, help="config directory (*.yaml)")
    serve.add_argument("--port", type=int, default=None, help="web port (overrides server.port)")
    serve.add_argument("--address", default=None, help="address to listen on (overrides server.address)")
    serve.add_argument("--data-root", default=None, help="base of relative data paths (default: cwd)")
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check-config", help="validate a config directory")
    check.add_argument("directory")
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vigie`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("asyncua", "amqtt", "transitions", "bokeh.server.protocol_handler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
