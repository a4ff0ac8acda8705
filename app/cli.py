"""The ``vigie`` command: ``demo``, ``serve``, ``check-config``, ``user`` / ``token`` (access), ``opcua-cert``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from urllib.parse import urlparse

from app.config import ConfigError, LoadedConfig, load_config
from app.gc_tuning import allocator_advice, tune_for_server

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
    sources = cfg.sources()
    print(f"{args.directory}: OK — store {cfg.store.engine}, {len(sources)} source(s)")
    for spec in sources:
        print(f"  {spec.name}: {spec.summary()}")
    count, sentence = loaded.layouts_report()
    print(sentence if count else f"warning: {sentence}")
    if args.browse:
        return check_opcua_browse(loaded)
    return 0


def check_opcua_browse(loaded: LoadedConfig) -> int:
    """Connect to each configured OPC-UA server; print what its nodes and browse selections resolve to.

    One line per variable: ``node id -> device/metric  (browse path)``, then
    what could not be resolved or was skipped. Returns 1 when a server cannot
    be reached or a node or selection does not resolve, else 0.
    """
    from app.hub import Hub
    from app.ingest.opcua import OpcUaSource, _describe, _redact
    from app.ingest.source_spec import BuildContext

    specs = loaded.config.opcua
    if not specs:
        print("no OPC-UA server configured: nothing to browse")
        return 0

    async def check(spec) -> bool:
        source: OpcUaSource = spec.build(BuildContext(Hub(), loaded.secret))  # type: ignore[assignment]
        print(f"opcua {spec.name} ({_redact(source.url)}):")
        try:
            resolved = await source.preview()
        except Exception as exc:
            print(f"  cannot connect: {_describe(exc)}")
            return False
        groups = [("nodes", f"nodes: {len(source.nodes)} configured")] if source.nodes else []
        groups += [(s.label, f"{s.label} (include {', '.join(s.include)}"
                    + (f"; exclude {', '.join(s.exclude)}" if s.exclude else "")
                    + ("" if s.recursive else "; not recursive") + f"; device {s.device!r}, metric {s.metric!r})")
                   for s in source.selections]
        for group, title in groups:
            rows = [r for r in resolved if r.group == group]
            print(f"  {title}: {len(rows)} variable(s)")
            for r in rows:
                address = f"  ({r.address})" if r.address != r.node_id else ""
                print(f"    {r.node_id} -> {r.device}/{r.metric}{address}")
            for reason in source.browse_skipped.get(group, []):
                print(f"    skipped {reason}")
        for label, reason in source.node_errors.items():
            print(f"  ! {label}: {reason}")
        return not source.node_errors

    async def check_all() -> list[bool]:
        return [await check(spec) for spec in specs]

    return 0 if all(asyncio.run(check_all())) else 1


def cmd_opcua_cert(args: argparse.Namespace) -> int:
    """Make the OPC-UA client certificate (DER) and private key (PEM) for the application URI Vigie presents."""
    import socket

    from asyncua.crypto.cert_gen import generate_self_signed_app_certificate
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID

    host = socket.gethostname()
    uri = args.application_uri or f"urn:{host}:vigie"
    hostnames = args.hostname or [host]
    out = Path(args.out)
    cert_path, key_path = out / f"{args.name}.der", out / f"{args.name}-key.pem"
    existing = [str(p) for p in (cert_path, key_path) if p.exists()]
    if existing and not args.force:
        print(f"vigie opcua-cert: {', '.join(existing)} already exist(s); --force replaces them (the server must "
              "then trust the new certificate)", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=args.key_size)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    names += [x509.DNSName(h) for h in hostnames]
    # The OPC-UA profile of an application instance certificate (OPC 10000-6, 6.2.2), as asyncua makes it:
    # the application URI as the first URI SubjectAltName, the host names, and the client's key usages.
    cert = generate_self_signed_app_certificate(key, args.common_name or f"Vigie ({host})",
                                                {"organizationName": "Vigie"}, names,
                                                [ExtendedKeyUsageOID.CLIENT_AUTH], days=args.days)
    key_path.touch(mode=0o600, exist_ok=True)
    key_path.chmod(0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()  # what OPC-UA servers display in trust lists
    print(f"certificate: {cert_path}\nprivate key: {key_path} (keep it secret; mode 600)\n"
          f"application URI: {uri}\nhost names: {', '.join(hostnames)}\n"
          f"valid until: {cert.not_valid_after_utc:%Y-%m-%d}\nSHA-1 thumbprint: {thumbprint}\n"
          "Trust the certificate on the server (copy the .der into its trusted folder, or accept it in its "
          "rejected list), then in the opcua section:\n"
          f"  certificate: {cert_path.resolve()}\n  private_key: {key_path.resolve()}\n"
          f"  application_uri: {uri}")
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
    if advice := allocator_advice():
        logging.getLogger("app.server").info(advice)
    asyncio.run(main())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the zero-install demo: embedded broker, simulated PLC and sensors, embedded store."""
    from app.demo.actors import SimulatorActor, StartedInBackground
    from app.demo.broker import EmbeddedBroker
    from app.demo.plc_sim import PumpStationServer
    from app.demo.simulate import Simulators
    from app.demo.webcam_sim import WebcamSimulator
    from app.runtime import Runtime
    from app.server import run_server

    loaded = _load_or_exit(Path(args.config) if args.config else default_config_dir())
    cfg = loaded.config
    _demo_admin(loaded, Path(args.data_root))
    if args.address:
        cfg.server.address = args.address
    mqtt = cfg.mqtt[0]
    extras: list = [EmbeddedBroker(host=mqtt.host, port=mqtt.port)]
    for o in cfg.opcua:
        url = urlparse(o.url)
        plc = PumpStationServer(host=url.hostname or "127.0.0.1", port=url.port or 4840)
        extras.append(StartedInBackground(plc, "the simulated PLC"))
    sims = Simulators(mqtt.host, mqtt.port, period_s=args.period, seed="vigie-demo")
    extras.append(SimulatorActor(sims))
    extras.append(SimulatorActor(WebcamSimulator(mqtt.host, mqtt.port, sims.dams[:1], period_s=5 * args.period,
                                                     tz=cfg.server.timezone)))

    async def main() -> None:
        runtime = Runtime(loaded, base_dir=Path(args.data_root))
        await run_server(runtime, port=args.port, extras=extras)

    print(f"Vigie demo: open http://localhost:{args.port or cfg.server.port}/  (Ctrl-C to stop)")
    tune_for_server()
    asyncio.run(main())
    return 0


def _accounts(loaded: LoadedConfig, data_root: Path | None):
    from app.web.accounts import AccountStore
    from app.web.secret import server_secret

    base = data_root or Path.cwd()
    return AccountStore(base / loaded.config.server.access_file, server_secret(loaded, base)).open()


def _demo_admin(loaded: LoadedConfig, data_root: Path) -> None:
    """Give the demo an admin to log in as: made once, its password printed once (the demo is a local toy)."""
    import secrets

    accounts = _accounts(loaded, data_root)
    try:
        if accounts.users:
            print(f"Vigie demo: log in with a user made earlier (the demo's admin is 'demo'; forgot its password? "
                  f"vigie user passwd demo --data-root {data_root})")
            return
        password = secrets.token_urlsafe(9)
        accounts.add_user("demo", "admin", password)
        print(f"Vigie demo: log in as  demo / {password}  (an admin; this password is shown once)", flush=True)
    finally:
        accounts.close()


def cmd_user(args: argparse.Namespace) -> int:
    """Manage users: add, list, passwd, role, disable, enable, delete."""
    import getpass
    import secrets

    from app.web.accounts import AccountError

    loaded = _load_or_exit(Path(args.config) if args.config else default_config_dir())
    accounts = _accounts(loaded, Path(args.data_root) if args.data_root else None)
    try:
        if args.action == "list":
            for u in accounts.user_list():
                print("\t".join([u.name, u.role.name, *(["disabled"] if u.disabled else [])]))
            return 0
        if not args.name:
            print(f"vigie user {args.action}: give the user name", file=sys.stderr)
            return 2
        if args.action in ("add", "passwd"):
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            elif args.generate or not sys.stdin.isatty():
                password = secrets.token_urlsafe(12)
                print(f"password for {args.name}: {password}  (shown once)")
            else:
                password = getpass.getpass(f"password for {args.name}: ")
            if args.action == "add":
                user = accounts.add_user(args.name, args.role, password)
                print(f"added {user.name} ({user.role.name})")
            else:
                accounts.set_password(args.name, password)
                print(f"password of {args.name} changed; their sessions ended")
        elif args.action == "role":
            print(f"{args.name} is now {accounts.set_role(args.name, args.role).role.name}")
        elif args.action in ("disable", "enable"):
            accounts.set_disabled(args.name, args.action == "disable")
            print(f"{args.name} {args.action}d")
        elif args.action == "delete":
            accounts.delete_user(args.name)
            print(f"deleted {args.name}")
        return 0
    except (AccountError, ValueError) as exc:
        print(f"vigie user {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        accounts.close()


def cmd_token(args: argparse.Namespace) -> int:
    """Manage API tokens: add (prints the token once), list, revoke."""
    import time

    from app.web.accounts import AccountError

    loaded = _load_or_exit(Path(args.config) if args.config else default_config_dir())
    accounts = _accounts(loaded, Path(args.data_root) if args.data_root else None)
    try:
        if args.action == "list":
            for tok in accounts.token_list(args.user):
                state = "revoked" if tok.revoked_ns else "live"
                print(f"{tok.id}\t{tok.user}\t{tok.label}\t{','.join(tok.scopes)}\t{state}")
            return 0
        if args.action == "revoke":
            accounts.revoke_token(args.id)
            print(f"revoked {args.id}")
            return 0
        expires = time.time_ns() + int(args.days * 86400e9) if args.days else None
        token, text = accounts.create_token(args.user, args.label, args.scope, expires)
        print(text)
        print(f"token {token.id} for {token.user}, scopes {','.join(token.scopes)} (shown once)", file=sys.stderr)
        return 0
    except (AccountError, ValueError) as exc:
        print(f"vigie token {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        accounts.close()


def cmd_decode(args: argparse.Namespace) -> int:
    """Print the readings and dead letters a sample payload gives under a configured subscription.

    Exit 0 when every value became a reading, 1 when anything was refused (a dead letter), 2 when the
    subscription or topic cannot be used.
    """
    import json
    from datetime import UTC, datetime

    from app.ingest.deadletters import DeadLetters
    from app.ingest.decoders import Context
    from app.ingest.topics import TopicTemplate
    from app.model import Reading, ReadingScreen, now_ns

    def fail(message: str) -> int:
        print(f"vigie decode: {message}", file=sys.stderr)
        return 2

    loaded = _load_or_exit(Path(args.config))
    cfg = loaded.config
    payload = sys.stdin.buffer.read() if args.payload == "-" else Path(args.payload).read_bytes()
    device = metric = None
    tags: dict[str, str] = {}
    if args.http:
        precision = args.precision or "ns"
        from app.ingest.http import HttpSource

        source = HttpSource("http", None, token=None, max_body_bytes=cfg.http.max_body_bytes,  # type: ignore[arg-type]
                            line_protocol=cfg.http.line_protocol.options())
        decoder = source.lp_decoder(precision)
        title = f"HTTP line protocol (/api/v1/write, /write, /api/v2/write), precision {precision}"
        source_name, where = "http", "http"
    else:
        brokers = [m for m in cfg.mqtt if args.source in (None, m.name)]
        if not brokers:
            return fail(f"no mqtt source named {args.source!r}")
        subs = [(m, s) for m in brokers for s in m.subscriptions]
        if args.subscription:
            found = [(m, s) for m, s in subs if args.subscription in (s.name, s.topic)]
            if not found:
                return fail(f"no subscription named or templated {args.subscription!r}; there are: "
                            + ", ".join(f"{s.label!r} ({m.name})" for m, s in subs))
            if len(found) > 1:
                return fail(f"{len(found)} subscriptions are {args.subscription!r}: name the broker with --source")
        elif args.topic:  # the first whose template matches, as a broker's messages are routed
            found = [next(((m, s) for m, s in subs if TopicTemplate.parse(s.topic).match(args.topic) is not None),
                          None)]
            if found[0] is None:
                return fail(f"no subscription's template matches the topic {args.topic!r}")
        else:
            return fail("give --subscription NAME_OR_TOPIC_TEMPLATE, --topic TOPIC, or --http")
        broker, sub = found[0]  # type: ignore[misc]
        if sub.decoder == "image":
            return fail(f"{sub.label!r} takes pictures (decoder image): nothing to decode into readings")
        template = TopicTemplate.parse(sub.topic)
        topic = args.topic
        if topic is None and not any(template.names):
            topic = sub.topic
        if topic is not None:
            levels = template.match(topic)
            if levels is None:
                return fail(f"the topic {topic!r} does not match the template {sub.topic!r}")
            device, metric = levels.pop("device", None), levels.pop("metric", None)
            tags = levels
        if args.precision and sub.decoder == "line_protocol":
            sub.precision = args.precision
        decoder = sub.build_decoder()
        title = f"subscription {sub.label!r} of mqtt {broker.name!r} (decoder {sub.decoder})"
        if topic is None:
            title += ", no --topic: the template's levels ({device}...) are unknown"
        source_name, where = broker.name, topic or sub.topic
    dead = DeadLetters(source_name, keep=100_000, quiet=True)
    out: list[Reading] = []
    notes: list[str] = []
    decoder.decode(payload, Context(source_name, where, now_ns(), device, metric, tags, notes), out, dead)
    good, refused = ReadingScreen().split(out)
    for r, reason in refused:  # what the source's edge check would refuse before the store
        dead.add(f"{where} {r.device!a}/{r.metric!a}", "invalid_reading", reason, ascii(r)[:120])

    def iso(ns: int) -> str:
        return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"

    if args.json:
        print(json.dumps({
            "readings": [{"series": r.key, "device": r.device, "metric": r.metric, "time_ns": r.time_ns,
                          "time": iso(r.time_ns), "value": r.value, "quality": r.quality, "unit": r.unit,
                          "tags": r.tags} for r in good],
            "dead_letters": [{"where": d.where, "kind": d.kind, "reason": d.reason} for d in dead.recent],
            "ignored": notes}, indent=1, ensure_ascii=False))
    else:
        print(title)
        print(f"{len(good)} reading(s)")
        for r in good:
            extra = "".join((f"  unit {r.unit}" if r.unit else "",
                             f"  tags {json.dumps(r.tags, ensure_ascii=False)}" if r.tags else ""))
            print(f"  {r.key} = {r.value:g}  at {iso(r.time_ns)}  {r.quality}{extra}")
        print(f"{len(dead.recent)} dead letter(s)")
        for d in dead.recent:
            print(f"  {d.where}: {d.kind}: {d.reason}")
        if notes:
            print(f"{len(notes)} ignored on purpose")
            for n in notes:
                print(f"  {n}")
    return 1 if dead.recent else 0


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
    check.add_argument("--browse", action="store_true",
                       help="also connect to each OPC-UA server and print what its nodes and browse selections "
                            "resolve to (node id -> device/metric)")
    check.set_defaults(func=cmd_check_config)
    cert = sub.add_parser("opcua-cert", help="make the OPC-UA client certificate and private key")
    cert.add_argument("--out", default=".", help="directory to write NAME.der and NAME-key.pem in (default: .)")
    cert.add_argument("--name", default="vigie-client", help="file name stem (default vigie-client)")
    cert.add_argument("--application-uri", default=None,
                      help="the client's application URI, put in the certificate (default urn:HOSTNAME:vigie); "
                           "the same as the config's application_uri, if set")
    cert.add_argument("--hostname", action="append", default=[],
                      help="a DNS name of this machine for the certificate; repeat for several (default: hostname)")
    cert.add_argument("--common-name", default=None, help="the subject's CN (default 'Vigie (HOSTNAME)')")
    cert.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    cert.add_argument("--key-size", type=int, default=2048, choices=[2048, 3072, 4096], help="RSA key size")
    cert.add_argument("--force", action="store_true", help="replace existing files")
    cert.set_defaults(func=cmd_opcua_cert)
    decode = sub.add_parser("decode", help="show the readings and dead letters a sample payload gives")
    decode.add_argument("payload", help="the payload's file, or - for standard input")
    decode.add_argument("--config", required=True, help="config directory (*.yaml)")
    decode.add_argument("--subscription", default=None,
                        help="the subscription's name or topic template (default: the first matching --topic)")
    decode.add_argument("--topic", default=None, help="the topic the payload arrives on ({device}, tags)")
    decode.add_argument("--source", default=None, help="the mqtt source, when several have the subscription")
    decode.add_argument("--http", action="store_true", help="decode as the HTTP line protocol endpoints would")
    decode.add_argument("--precision", default=None, choices=["s", "ms", "us", "ns"],
                        help="line protocol timestamps (default: the subscription's, ns over HTTP)")
    decode.add_argument("--json", action="store_true", help="print JSON")
    decode.set_defaults(func=cmd_decode)
    user = sub.add_parser("user", help="manage users (roles: viewer, operator, analyst, admin)")
    user.add_argument("action", choices=["add", "list", "passwd", "role", "disable", "enable", "delete"])
    user.add_argument("name", nargs="?")
    user.add_argument("--role", default="viewer", help="viewer, operator, analyst or admin (add, role)")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    user.add_argument("--generate", action="store_true", help="make a random password and print it once")
    token = sub.add_parser("token", help="manage API tokens (scopes: read, ingest, alarms:ack, write, admin)")
    token.add_argument("action", choices=["add", "list", "revoke"])
    token.add_argument("--user", help="the token acts for this user, within their role (add, list)")
    token.add_argument("--label", default="cli", help="what the token is for (add)")
    token.add_argument("--scope", action="append", default=[], help="a scope; repeat for several (add)")
    token.add_argument("--days", type=float, default=None, help="expires after this many days (add)")
    token.add_argument("--id", help="the token to revoke (revoke)")
    for p in (user, token):
        p.add_argument("--config", default=None, help="config directory (default: ./config or the shipped one)")
        p.add_argument("--data-root", default=None, help="the server's data root (default: cwd)")
    user.set_defaults(func=cmd_user)
    token.set_defaults(func=cmd_token)
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
