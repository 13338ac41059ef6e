"""Which model to explore, and how to get its predicted tree.

An explorer model is named either by a bundled architecture
(``bert-base-uncased``), by a bundled architecture with config overrides (a
compact BERT: ``bert-base-uncased[L=4,H=256]``) or by a ``module:factory``
reference to user code (``mypkg.models:tiny_bert`` or ``path/to/file.py:make``)
whose factory follows the convention of :mod:`pytest_irene.engine.factories` (the same
as ``irene predict --module``). Models are
built and traced on the meta device, so predicting even a large model at a
large input size takes no memory and well under a second.

torch, the tracer and the energy model are imported inside the functions: the
HTML report must stay importable without them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pytest_irene.engine.factories import build_from_factory
from pytest_irene.engine.tree import EnergyTree
from pytest_irene.errors import UsageError
from pytest_irene.explorer.params import ParameterError, RequestError, too_long

#: Config attribute names of compact BERT variants (Turc et al., 2019: L layers, H hidden,
#: H/64 heads, 4H feed-forward), as in Hugging Face BERT-style configs.
COMPACT_BERT_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
#: Width of one attention head in a compact variant: heads = hidden / 64.
HEAD_WIDTH = 64
#: Default caps of a compact variant (``irene serve --max-layers/--max-hidden``): twice
#: BERT-large, so every real configuration fits while ``L=2000`` (28 s, 11 MB of JSON) does not.
DEFAULT_MAX_LAYERS = 48
DEFAULT_MAX_HIDDEN = 2048


def bundled_architectures() -> tuple[str, ...]:
    """The architectures the tracer can build by name (the dataset's, then the extra bundled ones)."""
    from pytest_irene.engine.architectures import known_architectures

    return known_architectures()


@dataclass(frozen=True)
class ModelSpec:
    """A model the explorer can build on the meta device."""

    name: str
    """What the user sees and what the API takes (``bert-base-uncased[L=4,H=256]``)."""
    architecture: str | None = None
    """Bundled architecture name, or ``None`` for a factory."""
    factory: str | None = None
    """``module:factory`` or ``file.py:factory`` reference, or ``None``."""
    overrides: tuple[tuple[str, Any], ...] = field(default=())
    """Config overrides passed to ``build_model`` (bundled architectures only)."""

    @property
    def kind(self) -> str:
        return "factory" if self.factory else "bundled"

    def trace(self, batch_size: int, seq_len: int, device: str = "meta") -> EnergyTree:
        """The model tree with model features at this input size (not yet predicted), traced on ``device``.

        A :class:`UsageError` from the tracer itself (inputs this model cannot take,
        such as a sequence beyond its position table) becomes a :class:`RequestError`:
        the model was built, the requested size is what is wrong. Errors building the
        model (a factory that fails) stay what they are."""
        from pytest_irene.engine.tracing import trace

        if self.architecture is not None:
            from pytest_irene.engine.architectures import build_model, example_inputs

            model = build_model(self.architecture, device=device, **dict(self.overrides))
            inputs = example_inputs(model, batch_size, seq_len, device=device)
            sizes: dict[str, int] = {"batch_size": batch_size, "seq_len": seq_len}
        else:
            assert self.factory is not None
            from pytest_irene.engine.factories import load_factory, size_parameters

            model, inputs = build_from_factory(self.factory, batch_size, seq_len, device=device)
            sizes = {}  # read from the inputs, as irene predict reads them (a ViT's tokens are its patches)
        try:
            tree = trace(model, inputs, device=device, model_name=self.name, **sizes)
        except RequestError:
            raise
        except UsageError as exc:
            raise RequestError(f"{self.name} at batch size {batch_size}, sequence length {seq_len}: {exc}") from None
        ignored = (tree.batch_size, tree.seq_len) != (batch_size, seq_len)
        if self.factory is not None and ignored and not size_parameters(load_factory(self.factory)):
            raise RequestError(
                f"{self.name} takes no batch_size or seq_len parameter and builds inputs of batch {tree.batch_size} "
                f"x sequence {tree.seq_len}: it cannot be predicted at batch size {batch_size}, sequence length "
                f"{seq_len}; give the factory batch_size and seq_len parameters"
            )
        return tree


#: ``L=``/``H=`` values: ASCII digits only, as :func:`~.params.parse_int` (``int()`` also takes ``１`` or ``1_0``).
_COMPACT_INT = re.compile(r"[+-]?[0-9]+")


@lru_cache(maxsize=None)
def has_compact_variants(architecture: str) -> bool:
    """Whether the config of ``architecture`` takes the four BERT fields (:data:`COMPACT_BERT_KEYS`)
    and attends with one key/value head per query head (no ``num_key_value_heads``/``head_dim``)."""
    from pytest_irene.engine.architectures import build_config

    fields_ = build_config(architecture).to_dict()
    return all(k in fields_ for k in COMPACT_BERT_KEYS) and not {"num_key_value_heads", "head_dim"} & set(fields_)


def compact_problem(architecture: str) -> str | None:
    """Why ``architecture`` has no compact variants (``None`` when it has them).

    A config without ``intermediate_size`` (GPT-2, DistilBERT, CTRL) failed at build
    time with a 422 naming a config field, and a grouped-query config (the Llama-style
    one) built a model that cannot be traced. Both are the request's fault, so they
    are refused before any work, naming the architectures that work."""
    if has_compact_variants(architecture):
        return None
    ok = [a for a in bundled_architectures() if has_compact_variants(a)]
    return (
        f"{architecture} has no compact variants (L layers, H hidden, H/64 heads, 4H feed-forward "
        f"set BERT-style config fields); they exist for {', '.join(ok) or 'no bundled architecture'}"
    )


def compact_name(architecture: str, layers: int, hidden: int) -> str:
    return f"{architecture}[L={layers},H={hidden}]"


def compact_variants(
    architecture: str,
    layers: Sequence[int],
    hidden: Sequence[int],
    *,
    max_layers: int | None = None,
    max_hidden: int | None = None,
    parameter: str = "model",
) -> list[ModelSpec]:
    """Compact BERT-style variants: every (layers, hidden) pair, heads = hidden/64, feed-forward 4·hidden.

    ``compact_variants("bert-base-uncased", [2, 4, 6, 8, 10, 12], [128, 256, 512, 768])``
    gives the 24 compact BERTs of Turc et al. (2019). Layers must be at least 1
    and hidden sizes positive multiples of 64 (so there is at least one head);
    ``max_layers``/``max_hidden`` cap them (the web server's limits; the number of
    heads is capped with the hidden size). A bad value is a :class:`ParameterError`
    naming ``layers`` or ``hidden``; an architecture without them (:func:`compact_problem`)
    one naming ``parameter``.
    """
    problem = compact_problem(architecture)
    if problem is not None:
        raise ParameterError(parameter, problem)
    for h in hidden:
        if h < HEAD_WIDTH or h % HEAD_WIDTH:
            raise ParameterError(
                "hidden",
                f"H (hidden size) must be a positive multiple of {HEAD_WIDTH} (one head per {HEAD_WIDTH}), got {h}",
            )
        if max_hidden is not None and h > max_hidden:
            raise ParameterError(
                "hidden",
                f"H (hidden size) must be at most {max_hidden} ({max_hidden // HEAD_WIDTH} heads; server limit), got {h}",
            )
    for layer_count in layers:
        if layer_count < 1:
            raise ParameterError("layers", f"L (layers) must be at least 1, got {layer_count}")
        if max_layers is not None and layer_count > max_layers:
            raise ParameterError("layers", f"L (layers) must be at most {max_layers} (server limit), got {layer_count}")
    specs = []
    for layer_count in layers:
        for h in hidden:
            values = (layer_count, h, h // HEAD_WIDTH, 4 * h)
            specs.append(
                ModelSpec(
                    compact_name(architecture, layer_count, h),
                    architecture=architecture,
                    overrides=tuple(zip(COMPACT_BERT_KEYS, values)),
                )
            )
    return specs


def resolve_model(
    name: str,
    *,
    allowed_factories: Sequence[str] | None = None,
    parameter: str = "model",
    max_layers: int | None = None,
    max_hidden: int | None = None,
) -> ModelSpec:
    """The spec for a model name given by a user.

    ``allowed_factories=None`` allows any ``module:factory`` (the CLI: users run
    their own code); a sequence restricts them to those references (the web
    server: a request must not import arbitrary modules). Compact variants are
    written ``ARCH[L=4,H=256]`` and bounded by ``max_layers``/``max_hidden``
    (see :func:`compact_variants`).
    """
    name = name.strip()
    archs = bundled_architectures()
    if name in archs:
        return ModelSpec(name, architecture=name)
    if name.endswith("]") and "[" in name:
        arch, _, rest = name[:-1].partition("[")
        if arch in archs:
            pairs = [part.partition("=") for part in rest.split(",")]
            keys = [k.strip() for k, _, _ in pairs]
            values = [v.strip() for _, _, v in pairs]
            # exactly L and H, once each (a repeated L silently took the last), ASCII integers
            if sorted(keys) != ["H", "L"] or not all(_COMPACT_INT.fullmatch(v) and not too_long(v) for v in values):
                raise ParameterError(parameter, f"{name!r:.80}: expected ARCH[L=<layers>,H=<hidden>], each once, "
                                     "as integers of a sane size")
            kv = dict(zip(keys, (int(v) for v in values)))
            layers, hidden = kv["L"], kv["H"]
            try:
                return compact_variants(arch, [layers], [hidden], max_layers=max_layers, max_hidden=max_hidden)[0]
            except ParameterError as exc:
                raise ParameterError(parameter, f"{name!r}: {exc.problem}") from None
    if ":" in name:
        if allowed_factories is not None and name not in allowed_factories:
            raise ParameterError(parameter, f"{name!r} is not among the factories this server allows")
        return ModelSpec(name, factory=name)
    raise ParameterError(parameter, f"unknown model {name!r}; expected one of {list(archs)} or MODULE:FACTORY")


def energy_model(profile: str) -> Any:
    """The loaded :class:`~pytest_irene.engine.predict.energy_model.EnergyModel` of ``profile``
    (:meth:`EnergyModel.load <pytest_irene.engine.predict.energy_model.EnergyModel.load>` caches it)."""
    from pytest_irene.engine.predict.energy_model import EnergyModel

    return EnergyModel.load(profile)


def bundled_profiles() -> list[str]:
    from pytest_irene.engine.predict.profiles import bundled_profiles as _bundled

    return list(_bundled())


def predict_tree(
    spec: ModelSpec, batch_size: int, seq_len: int, profile: str, features: str = "model", *, device: str = "meta"
) -> EnergyTree:
    """Trace ``spec`` on ``device`` (meta by default: nothing runs) and predict every node with ``profile``."""
    tree = energy_model(profile).predict(spec.trace(batch_size, seq_len, device), features=features)
    tree.meta["profile"] = profile  # the name asked for (a path stays a path), not the file's own
    return tree
