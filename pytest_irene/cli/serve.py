"""``irene serve``: the energy explorer as a local web app."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pytest_irene.errors import UsageError
from pytest_irene.explorer.models import DEFAULT_MAX_HIDDEN, DEFAULT_MAX_LAYERS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the interactive energy explorer and its JSON API",
        description=(
            "Serve the energy explorer: pick an architecture, batch size, sequence length and "
            "profile and see the predicted energy tree; sweep input sizes. JSON API under /api "
            "(/api/models, /api/profiles, /api/energy, /api/sweep)."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument(
        "--allow-module",
        action="append",
        default=[],
        metavar="PATH:FACTORY",
        help="let requests name this model factory (module:function or file.py:function; repeatable)",
    )
    p.add_argument("--max-batch-size", type=int, default=256, metavar="N", help="largest batch size a request may ask for (256)")
    p.add_argument("--max-seq-len", type=int, default=2048, metavar="N", help="largest sequence length a request may ask for (2048)")
    p.add_argument("--max-sweep-points", type=int, default=64, metavar="N", help="largest number of combinations in one sweep (64)")
    p.add_argument("--max-layers", type=int, default=DEFAULT_MAX_LAYERS, metavar="N",
                   help=f"most layers L of a compact variant ARCH[L=,H=] ({DEFAULT_MAX_LAYERS})")
    p.add_argument("--max-hidden", type=int, default=DEFAULT_MAX_HIDDEN, metavar="N",
                   help=f"largest hidden size H of a compact variant; heads are H/64 ({DEFAULT_MAX_HIDDEN})")
    p.add_argument("--max-concurrent", type=int, default=2, metavar="N",
                   help="predictions computed at once; other requests wait, up to 30 s, then get 503 (2)")
    p.add_argument("--profile", default=None,
                   help="default energy model: bundled profile or model file (default: the first bundled profile)")
    p.set_defaults(func=run)


def listen_host(value: str) -> str:
    """``--host`` as the socket wants it: ``[::1]`` (as written in a URL) becomes ``::1``,
    and an empty value is refused rather than silently listening on every interface."""
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise UsageError("--host: empty; give an address such as 127.0.0.1 (this machine) or 0.0.0.0 (every interface)")
    return host


def server_url(host: str, port: int) -> str:
    """The URL to open: an IPv6 address goes in brackets (``http://[::1]:8000/``), since
    ``http://::1:8000/`` is not a URL a browser or curl accepts."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``127.0.0.0/8``, ``::1``, ``localhost``),
    so that ``127.0.0.2`` does not get the warning meant for ``0.0.0.0``."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_explorer_server(host: str, port: int, app: Any) -> Any:
    """The threaded WSGI server ``irene serve`` runs; a :class:`UsageError` naming ``--host``/``--port``
    when it cannot listen there.

    Werkzeug's own server prints a failed bind (an unknown host, a port in use) and
    calls ``sys.exit(1)``: that would skip the CLI's one-line error and exit 2.
    Its request handler also re-encodes the request line, so a non-ASCII byte sent
    unescaped in a query (``batch_size=８``) would reach the app, and its error
    message, as latin-1 mojibake; the handler below hands the query on as received."""
    import socket
    from urllib.parse import urlsplit

    from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

    class RequestHandler(WSGIRequestHandler):
        def make_environ(self) -> dict[str, Any]:
            environ = super().make_environ()
            # http.server decoded the request line as latin-1, which is how WSGI wants the raw query
            environ["QUERY_STRING"] = urlsplit(self.path).query
            return environ

    class Server(ThreadedWSGIServer):
        def server_bind(self) -> None:
            try:
                super().server_bind()
            except socket.gaierror as exc:
                raise UsageError(
                    f"--host: {host!r} is not an address or a host name this machine can resolve "
                    f"({exc.strerror or exc})"
                ) from None
            except OSError as exc:
                raise UsageError(f"--host/--port: cannot listen on {host}:{port} ({exc.strerror or exc})") from None

    return Server(host, port, app, RequestHandler)


def run(args: argparse.Namespace) -> int:
    from pytest_irene.explorer.app import ServerConfig, create_app
    from pytest_irene.engine.factories import load_factory

    for name, value in (("--max-batch-size", args.max_batch_size), ("--max-seq-len", args.max_seq_len),
                        ("--max-sweep-points", args.max_sweep_points), ("--max-layers", args.max_layers),
                        ("--max-hidden", args.max_hidden), ("--max-concurrent", args.max_concurrent)):
        if value < 1:
            raise UsageError(f"{name}: must be at least 1, got {value}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port: expected 0-65535, got {args.port}")
    for ref in args.allow_module:
        try:
            load_factory(ref)  # fail at start-up, not on the first request
        except UsageError as exc:
            raise UsageError(f"--allow-module {exc}") from None
    if args.profile is not None:
        from pytest_irene.explorer.models import energy_model

        energy_model(args.profile)  # ModelFileError names a bad profile before listening
    config = ServerConfig(
        allowed_modules=tuple(args.allow_module),
        max_batch_size=args.max_batch_size,
        max_seq_len=args.max_seq_len,
        max_sweep_points=args.max_sweep_points,
        max_layers=args.max_layers,
        max_hidden=args.max_hidden,
        max_concurrent=args.max_concurrent,
        default_profile=args.profile,
    )
    host = listen_host(args.host)
    server = make_explorer_server(host, args.port, create_app(config))
    print(f"irene serve: energy explorer on {server_url(host, server.server_port)} (Ctrl-C to stop)", flush=True)
    if not is_loopback(host):
        print(
            f"irene serve: warning: listening on {host}: anyone who can reach this port can use the "
            "explorer (there is no authentication); the limits above still apply",
            file=sys.stderr,
            flush=True,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
