"""User model factories: ``pkg.mod:make`` or ``path/to/file.py:make``.

``irene predict --module``, ``irene sweep``/``irene serve`` and the explorer all
let users name their own model by a factory. One module holds the convention so
that they agree on it:

* the factory returns a ``torch.nn.Module`` or a ``(module, inputs)`` pair;
* it may take ``batch_size`` and ``seq_len`` keyword arguments, to build inputs
  of the requested size;
* a module returned alone gets its own ``irene_inputs(batch_size, seq_len,
  device)`` or, for a transformers model, the tracer's example inputs.

The factory runs under ``torch.device(device)``: on the meta device the
parameters it creates allocate nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_irene.errors import UsageError

_IMPORT_LOCK = threading.Lock()  # the web app may load factories from several request threads


def load_factory(ref: str) -> Callable[..., Any]:
    """Import ``module:attr`` or ``path/to/file.py:attr`` and return the callable.

    A module name is also looked up in the current directory, as ``python -m``
    does, so ``--module mypkg.models:make`` works from the project's root."""
    if ":" not in ref:
        raise UsageError(f"{ref!r}: expected MODULE:FACTORY or FILE.py:FACTORY")
    where, _, attr = ref.rpartition(":")
    if not where or not attr.isidentifier():
        raise UsageError(f"{ref!r}: expected MODULE:FACTORY or FILE.py:FACTORY")
    with _IMPORT_LOCK:
        if where.endswith(".py") or "/" in where or "\\" in where:
            module = _import_file(ref, Path(where).expanduser().resolve())
        else:
            if os.getcwd() not in sys.path:  # as ``python -m``: the ``irene`` script does not add the project
                sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(where)
            except ImportError as exc:
                if exc.name == where or where.startswith(f"{exc.name}."):  # the module itself is missing
                    raise UsageError(f"{ref!r}: cannot import module {where!r} ({exc})") from exc
                raise _import_failed(ref, where, exc) from exc
            except Exception as exc:  # noqa: BLE001 - the user's module failed while it was imported
                raise _import_failed(ref, where, exc) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"{ref!r}: {where} has no callable {attr!r}")
    return factory


def _import_file(ref: str, path: Path) -> Any:
    """Import a file once per path, under a name that cannot clash with the user's packages."""
    if not path.is_file():
        raise UsageError(f"{ref!r}: no such file {path}")
    mod_name = "_irene_factory_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module = sys.modules.get(mod_name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{ref!r}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[mod_name]
        if isinstance(exc, Exception):  # not KeyboardInterrupt/SystemExit: those still stop the program
            raise _import_failed(ref, str(path), exc) from exc
        raise
    return module


def _import_failed(ref: str, where: str, exc: Exception) -> UsageError:
    """The one-line error for a factory's module that raised while it was imported.

    Whatever the user's code raises at import (a SyntaxError, a missing package,
    its own RuntimeError) is a problem with the ``--module``/``--allow-module``
    reference, not with pytest-irene: the message names the file and the line
    (the exception's own for a SyntaxError, the innermost frame of the user's
    code otherwise), the exception type and its message, instead of a traceback."""
    if isinstance(exc, SyntaxError):
        at = f"{exc.filename or where}:{exc.lineno}" if exc.lineno else (exc.filename or where)
        return UsageError(f"{ref!r}: cannot import {where}: SyntaxError at {at}: {exc.msg}")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen ")]
    at = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    message = " ".join(str(exc).split())
    return UsageError(f"{ref!r}: cannot import {where}: {type(exc).__name__}{at}" + (f": {message}" if message else ""))


def size_parameters(factory: Any) -> set[str]:
    """Which of ``batch_size``/``seq_len`` the factory takes (it is given those it names)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return set()
    return {"batch_size", "seq_len"} & set(params)


def build_from_factory(ref: str, batch_size: int, seq_len: int, *, device: str = "meta") -> tuple[Any, Any]:
    """``(model, inputs)`` on ``device`` from the factory ``ref``, following the convention above.

    Every failure is a :class:`UsageError` that starts with ``ref``, so callers
    only prefix the option or parameter name the user gave it with."""
    import torch

    factory = load_factory(ref)
    params = size_parameters(factory)
    kwargs = {k: v for k, v in (("batch_size", batch_size), ("seq_len", seq_len)) if k in params}
    with torch.device(device):
        try:
            result = factory(**kwargs)
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"{ref}: the factory raised {type(exc).__name__}: {exc}") from exc
    inputs = None
    if isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[0], torch.nn.Module):
        result, inputs = result
    if not isinstance(result, torch.nn.Module):
        raise UsageError(
            f"{ref}: the factory returned {type(result).__name__}; expected a torch.nn.Module or a (module, inputs) pair"
        )
    model = result.to(device)
    if inputs is None:
        inputs = _default_inputs(ref, model, batch_size, seq_len, device)
    return model, inputs


def _default_inputs(ref: str, model: Any, batch_size: int, seq_len: int, device: str) -> Any:
    custom = getattr(model, "irene_inputs", None)
    if callable(custom):
        return custom(batch_size, seq_len, device=device)
    config = getattr(model, "config", None)
    if config is not None and callable(getattr(config, "to_dict", None)):
        from pytest_irene.engine.architectures import example_inputs

        return example_inputs(model, batch_size, seq_len, device=device)
    if config is not None:
        raise UsageError(
            f"{ref}: the factory returned a {type(model).__name__} without inputs, and its `config` "
            f"({type(config).__name__}) is not a transformers config, so no example inputs can be built from it; "
            "return (module, inputs) or give the module an irene_inputs(batch_size, seq_len, device) method"
        )
    raise UsageError(
        f"{ref}: the factory returned a {type(model).__name__} without inputs; return "
        "(module, inputs) or give the module an irene_inputs(batch_size, seq_len, device) method"
    )
