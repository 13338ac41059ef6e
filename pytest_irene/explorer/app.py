"""The explorer as a local web app (``irene serve``): pick a model, see its energy tree.

A Flask app with a small JSON API, modelled on IrEne-viz:

- ``GET /`` the page (same renderer as the HTML report, plus a form and a sweep tab);
- ``GET /api/models``, ``GET /api/profiles``;
- ``GET /api/energy?model=&batch_size=&seq_len=&profile=`` the whole predicted tree
  (a call view, see :mod:`.payload`);
- ``GET /api/sweep?model=&model=&batch_sizes=8,16&seq_lens=32,64&profile=`` a sweep.

Bad parameters (an unknown or repeated one, a bad value, a size the model cannot
take) get 400 with ``{"error": ..., "parameter": ...}``; every error, a wrong
method or path included, is JSON. Batch size,
sequence length, sweep size and the layers and hidden size of a compact variant
(``ARCH[L=,H=]``, and so its heads) are capped. At most ``max_concurrent``
predictions run at once, each tree is computed once however many requests ask
for it, and results are kept in an LRU cache: a request can neither exhaust the
machine, nor hold every other request up, nor make the server redo work it
just did. A request that waits ``busy_timeout_s`` for a free slot gets 503. Models named by ``module:factory``
are served only when the server was started with ``--allow-module`` for them:
a request must never make the server import arbitrary code.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from flask import Flask, Response, jsonify, request

from pytest_irene.errors import IreneError
from pytest_irene.engine.tree import EnergyTree
from pytest_irene.explorer.html import render_page
from pytest_irene.explorer.models import DEFAULT_MAX_HIDDEN, DEFAULT_MAX_LAYERS
from pytest_irene.explorer.params import ParameterError, RequestError, parse_int, parse_int_list
from pytest_irene.explorer.payload import call_view
from pytest_irene.validate import is_finite_number

API_PARAMETERS = {
    "energy": {"model", "batch_size", "seq_len", "profile"},
    "sweep": {"model", "batch_sizes", "seq_lens", "profile"},
}
#: Parameters a request may give more than once (a sweep over several models); any other
#: repeated one is refused, since reading only the first would silently ignore the rest.
REPEATABLE_PARAMETERS = {"energy": frozenset(), "sweep": frozenset({"model"})}


@dataclass(frozen=True)
class ServerConfig:
    """What the server allows; every limit protects the machine it runs on."""

    allowed_modules: tuple[str, ...] = ()
    """``module:factory`` references requests may name (besides the bundled architectures)."""
    max_batch_size: int = 256
    max_seq_len: int = 2048
    max_sweep_points: int = 64
    """Largest number of (model, batch size, sequence length) combinations in one sweep."""
    max_layers: int = DEFAULT_MAX_LAYERS
    """Most layers (``L``) a compact variant may have."""
    max_hidden: int = DEFAULT_MAX_HIDDEN
    """Largest hidden size (``H``) of a compact variant; its heads are ``H/64``."""
    max_concurrent: int = 2
    """Predictions computed at the same time; more requests wait for a slot."""
    busy_timeout_s: float = 30.0
    """How long a request waits for a free slot before it gets 503."""
    cache_size: int = 256
    """Predicted trees kept in the LRU cache."""
    default_profile: str | None = None
    """Profile used when a request names none; the first bundled profile when ``None``."""
    predict: Callable[[Any, int, int, str], EnergyTree] | None = None
    """``predict(spec, batch_size, seq_len, profile) -> EnergyTree``; the real tracer +
    energy model (:func:`.models.predict_tree`) when ``None``. Swappable for embedding."""

    def __post_init__(self) -> None:
        """Every value of the type its field holds: a limit given as ``"16"`` made every request a 500
        (``int > str``), and one factory given as a string allowed each of its characters."""
        modules = self.allowed_modules
        if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
            raise IreneError(f"server configuration 'allowed_modules': expected a list of 'module:factory' strings, "
                             f"got {modules!r:.80}")
        for name in ("max_batch_size", "max_seq_len", "max_sweep_points", "max_layers", "max_hidden",
                     "max_concurrent", "cache_size"):
            value = getattr(self, name)
            low = 0 if name == "cache_size" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise IreneError(f"server configuration {name!r}: expected an integer >= {low}, got {value!r:.60}")
        if not is_finite_number(self.busy_timeout_s) or self.busy_timeout_s <= 0:
            raise IreneError(f"server configuration 'busy_timeout_s': expected seconds > 0, got {self.busy_timeout_s!r:.60}")
        if self.default_profile is not None and not isinstance(self.default_profile, str):
            raise IreneError(f"server configuration 'default_profile': expected a profile name or path, "
                             f"got {self.default_profile!r:.60}")
        if self.predict is not None and not callable(self.predict):
            raise IreneError(f"server configuration 'predict': expected a callable, got {self.predict!r:.60}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ServerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise IreneError(f"unknown server configuration keys {unknown}; expected some of {sorted(known)}")
        data = dict(values)
        modules = data.get("allowed_modules")
        if modules is not None and not isinstance(modules, str):
            data["allowed_modules"] = tuple(modules)
        return cls(**data)


class LRUCache:
    """A thread-safe least-recently-used cache with hit/miss counters."""

    def __init__(self, size: int):
        self.size = max(0, int(size))
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class ServerBusy(IreneError):
    """Every prediction slot stayed taken for ``busy_timeout_s``: the request gets 503."""


class Explorer:
    """The app's state: configuration, cache, and the slots predictions run in."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.cache = LRUCache(config.cache_size)
        self._slots = threading.BoundedSemaphore(max(1, config.max_concurrent))
        # one lock per tree being computed, so that concurrent requests for the same
        # tree compute it once while requests for other trees never wait behind it
        self._key_locks: dict[Hashable, tuple[threading.Lock, list[int]]] = {}
        self._key_locks_guard = threading.Lock()

    # -- choices ---------------------------------------------------------------------------
    def models(self) -> list[dict[str, str]]:
        from pytest_irene.explorer.models import bundled_architectures, has_compact_variants

        # "compact": the page offers L/H fields for ARCH[L=,H=] only where such a variant builds
        out = [{"name": n, "kind": "bundled", "compact": has_compact_variants(n)} for n in bundled_architectures()]
        out += [{"name": m, "kind": "factory"} for m in self.config.allowed_modules]
        return out

    def profiles(self) -> list[str]:
        from pytest_irene.explorer.models import bundled_profiles

        profiles = bundled_profiles()
        if self.config.default_profile and self.config.default_profile not in profiles:
            profiles.insert(0, self.config.default_profile)  # a model file the operator chose
        return profiles

    def default_profile(self) -> str:
        if self.config.default_profile:
            return self.config.default_profile
        profiles = self.profiles()
        if not profiles:
            raise IreneError("no bundled energy model profiles are installed")
        return profiles[0]

    # -- validation ------------------------------------------------------------------------
    def spec(self, name: str | None) -> Any:
        from pytest_irene.explorer.models import resolve_model

        if not name:
            raise ParameterError("model", "missing; expected a name from /api/models")
        return resolve_model(
            name,
            allowed_factories=self.config.allowed_modules,
            max_layers=self.config.max_layers,
            max_hidden=self.config.max_hidden,
        )

    def profile(self, name: str | None) -> str:
        """The profile a request names: a listed one, or the profile name stored in the operator's model file.

        ``irene serve --profile rig.json`` lists the file as ``rig.json``, but the
        trees and reports call it by the name inside it (``rig``), so a request may
        use either, as long as no bundled profile has that name."""
        if name is None or name == "":
            return self.default_profile()
        profiles = self.profiles()
        if name in profiles:
            return name
        chosen = self.config.default_profile
        if chosen:
            from pytest_irene.explorer.models import energy_model

            if getattr(energy_model(chosen), "profile", None) == name:
                return chosen
        raise ParameterError("profile", f"unknown profile {name!r}; expected one of {profiles}")

    # -- prediction ------------------------------------------------------------------------
    def tree(self, spec: Any, batch_size: int, seq_len: int, profile: str) -> tuple[EnergyTree, bool]:
        """The predicted tree, from the cache when possible; returns ``(tree, cache_hit)``."""
        key = (spec, batch_size, seq_len, profile)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        with self._key_lock(key):
            cached = self.cache.get(key)  # another request may have computed it meanwhile
            if cached is not None:
                return cached, True
            if not self._slots.acquire(timeout=self.config.busy_timeout_s):
                raise ServerBusy(
                    f"the server is busy ({self.config.max_concurrent} predictions running for over "
                    f"{self.config.busy_timeout_s:g} s); try again"
                )
            try:
                predict = self.config.predict
                if predict is None:
                    from pytest_irene.explorer.models import predict_tree as predict
                tree = predict(spec, batch_size, seq_len, profile)
            finally:
                self._slots.release()
            self.cache.put(key, tree)
        return tree, False

    @contextmanager
    def _key_lock(self, key: Hashable) -> Iterator[None]:
        """Hold the lock of one tree; it is dropped when no request holds or awaits it."""
        with self._key_locks_guard:
            lock, users = self._key_locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._key_locks_guard:
                users[0] -= 1
                if not users[0]:
                    del self._key_locks[key]


def _error(status: int, message: str, parameter: str | None = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"error": message}
    if parameter:
        body["parameter"] = parameter
    return jsonify(body), status


def _check_parameters(kind: str) -> None:
    """Refuse parameters the endpoint does not take, and single-valued ones given more than once."""
    for key in request.args:
        if key not in API_PARAMETERS[kind]:
            raise ParameterError(key, f"unknown parameter; expected some of {sorted(API_PARAMETERS[kind])}")
        count = len(request.args.getlist(key))
        if count > 1 and key not in REPEATABLE_PARAMETERS[kind]:
            raise ParameterError(key, f"given {count} times; give it once")


def create_app(config: ServerConfig | Mapping[str, Any] | None = None) -> Flask:
    """The Flask app. ``config`` is a :class:`ServerConfig`, a mapping of its fields, or ``None``."""
    if config is None:
        config = ServerConfig()
    elif not isinstance(config, ServerConfig):
        config = ServerConfig.from_mapping(config)
    explorer = Explorer(config)
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["irene_explorer"] = explorer

    @app.after_request
    def _hardening_headers(response: Response) -> Response:
        # Errors echo what the request sent (an unknown model '<script>...'): with nosniff a
        # browser never renders that JSON as HTML; the page is not meant to be framed by others.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.errorhandler(RequestError)
    def _bad_request(exc: RequestError):
        return _error(400, str(exc), exc.parameter)

    @app.errorhandler(ServerBusy)
    def _busy(exc: ServerBusy):
        return _error(503, str(exc))

    @app.errorhandler(IreneError)
    def _irene_error(exc: IreneError):
        # the request was well-formed but the model could not be traced/predicted
        return _error(422, str(exc))

    @app.errorhandler(404)
    def _not_found(exc: Exception):
        return _error(404, f"no such page {request.path}")

    @app.errorhandler(405)
    def _wrong_method(exc: Exception):
        allowed = sorted(getattr(exc, "valid_methods", None) or [])
        response, status = _error(
            405, f"{request.method} is not allowed on {request.path} (allowed: {', '.join(allowed) or 'GET'})"
        )
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response, status

    @app.errorhandler(500)
    def _internal(exc: Exception):
        return _error(500, "internal error while predicting; see the server log")

    @app.get("/")
    def index() -> str:
        data = {
            "kind": "app",
            "api": request.script_root + "/api",
            "limits": {
                "max_batch_size": config.max_batch_size,
                "max_seq_len": config.max_seq_len,
                "max_sweep_points": config.max_sweep_points,
                "max_layers": config.max_layers,
                "max_hidden": config.max_hidden,
            },
            "defaults": {"batch_size": 8, "seq_len": 128, "sweep_batch_sizes": [8, 16], "sweep_seq_lens": [32, 64, 128]},
        }
        return render_page(data, "pytest-irene energy explorer")

    @app.get("/favicon.ico")
    def favicon() -> tuple[str, int]:
        return "", 204

    @app.get("/api/models")
    def models():
        return jsonify({"models": explorer.models()})

    @app.get("/api/profiles")
    def profiles():
        return jsonify({"profiles": explorer.profiles(), "default": explorer.default_profile()})

    @app.get("/api/energy")
    def energy():
        _check_parameters("energy")
        args = request.args
        spec = explorer.spec(args.get("model"))
        batch_size = parse_int(args.get("batch_size"), "batch_size", maximum=config.max_batch_size)
        seq_len = parse_int(args.get("seq_len"), "seq_len", maximum=config.max_seq_len)
        profile = explorer.profile(args.get("profile"))
        tree, hit = explorer.tree(spec, batch_size, seq_len, profile)
        view = call_view(tree, call_id="call-api", title=spec.name, profile=profile)
        response = jsonify(view)
        response.headers["X-Irene-Cache"] = "hit" if hit else "miss"
        return response

    @app.get("/api/sweep")
    def sweep():
        from pytest_irene.explorer.sweep import Sweep, point_from_tree

        _check_parameters("sweep")
        args = request.args
        names = args.getlist("model")
        if not names:
            raise ParameterError("model", "missing; give one or more model=NAME")
        specs = []
        for name in names:
            spec = explorer.spec(name)
            if spec not in specs:
                specs.append(spec)
        batch_sizes = parse_int_list(args.get("batch_sizes"), "batch_sizes", maximum=config.max_batch_size)
        seq_lens = parse_int_list(args.get("seq_lens"), "seq_lens", maximum=config.max_seq_len)
        n = len(specs) * len(batch_sizes) * len(seq_lens)
        if n > config.max_sweep_points:
            raise ParameterError(
                "seq_lens", f"{n} combinations (models × batch_sizes × seq_lens) exceed the server limit of {config.max_sweep_points}"
            )
        profile = explorer.profile(args.get("profile"))
        result = Sweep(profile, [s.name for s in specs], batch_sizes, seq_lens)
        for spec in specs:
            for b in batch_sizes:
                for s in seq_lens:
                    tree, _ = explorer.tree(spec, b, s, profile)
                    result.points.append(point_from_tree(spec.name, tree))
        return jsonify(result.to_dict())

    return app
