"""Training ranges of a profile: where its predictions interpolate and where they extrapolate.

A profile is trained on some batch sizes, sequence lengths, model widths and node types.
Outside them the numbers come from the physics of the regressors alone (or, for an unseen
type, from the generic regressor): they may be right, but users should know. The ranges
are stored in the model file (``dataset.ranges``) and every prediction records what it
extrapolates in ``tree.meta["extrapolation"]``, which the terminal summary and the explorer
show.

Width is the model's hidden size read off its normalisation leaves (LayerNorm counts 8
flops per element, RMSNorm 6: ``flops / (per element · batch · sequence)``). A tree
without one (a transformer without normalisation, an embedding feeding an MLP) has the
width of its widest embedding table instead: an ``Embedding`` leaf moves its int64 ids
and one row of ``embedding_dim`` elements per token, nothing else, so
``(mem_bytes / tokens − 8) / bytes_per_element`` is its dim. A tree with neither (an MLP,
a CNN) has no width and is not checked for it: a ``Linear``'s flops and bytes do not say
which of its two sizes is the model's.

The element size (``bytes_per_element`` of the root: 4 for fp32, 2 for bf16/fp16) is a range
too: a profile measured in fp32 (``irene-pc1``: its lines carry no element size, which
means fp32) predicts a bf16 model from its halved bytes only, and says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_irene.engine.tree import NORM_WIDTH_NOTE, EnergyTree
from pytest_irene.validate import check, floats, names, require

#: Flops per element of the normalisation primitives whose width reveals the model's.
NORM_FLOPS_PER_ELEMENT = {"LayerNorm": 8.0, "RMSNorm": 6.0}
#: Relative slack before a width counts as outside the trained ones (rounding of flop counts).
WIDTH_SLACK = 0.05
#: Bytes of one token id of an embedding lookup (int64, what tokenizers and ``torch.long`` give;
#: int32 ids read one element less wide, within :data:`WIDTH_SLACK` from width 20 up).
EMBEDDING_ID_BYTES = 8.0
#: Why every generation's decode figures extrapolate (see :mod:`pytest_irene.engine.generation_tree`).
DECODE_EXTRAPOLATES = "decode steps (one new token over the KV cache) never measured: predicted from whole-sequence forwards"
#: Element size of a node whose line records none (the reference datasets: all fp32).
DEFAULT_ELEMENT_BYTES = 4.0
#: How an element size is named in the reasons.
_ELEMENT_NAMES = {4.0: "32-bit (fp32)", 2.0: "16-bit (bf16/fp16)", 1.0: "8-bit", 8.0: "64-bit (fp64)"}


def tree_element_bytes(tree: EnergyTree) -> float:
    """The element size the model computes in: its root's ``bytes_per_element`` (fp32 without one)."""
    return float(tree.root.features.get("bytes_per_element", DEFAULT_ELEMENT_BYTES))


def tree_weight_dtypes(tree: EnergyTree) -> dict[float, set[str]]:
    """Element size -> dtype names of the low-precision weights the tree's nodes store or multiply
    by (``notes["weight_dtype"]``, :func:`pytest_irene.engine.quantized.note_weight_dtype`)."""
    found: dict[float, set[str]] = {}
    for node in tree.walk():
        size = node.notes.get("weight_bytes_per_element")
        if isinstance(size, (int, float)) and "weight_dtype" in node.notes:
            found.setdefault(float(size), set()).add(str(node.notes["weight_dtype"]))
    return found


def _element_name(size: float) -> str:
    return _ELEMENT_NAMES.get(size, f"{size:g}-byte")


def _norm_flops_per_element(type_name: str) -> float | None:
    """Flops per element of a normalisation leaf, by its family (``LlamaRMSNorm`` is an RMSNorm,
    ``BertLayerNorm`` a LayerNorm), as :mod:`pytest_irene.engine.features` names them."""
    low = type_name.lower()
    if low.endswith("rmsnorm") or low == "t5layernorm":
        return NORM_FLOPS_PER_ELEMENT["RMSNorm"]
    return NORM_FLOPS_PER_ELEMENT["LayerNorm"] if low.endswith("layernorm") else None


def tree_width(tree: EnergyTree) -> float | None:
    """The hidden size of ``tree`` from its widest normalisation leaf, else from its widest
    embedding table, ``None`` when it has neither (see the module docstring).

    A generation is measured on its prefill (one forward over the prompt's tokens): its
    decode part sums the features of every step, which no token count divides back."""
    tokens = max(int(tree.batch_size or 0), 1) * max(int(tree.seq_len or 0), 1)
    top = tree.root
    if top.type == "Generation":
        top = next((c for c in top.children if c.scope == "prefill"), top)
    leaves = [node for node in top.walk() if not node.children]
    widths = [
        _norm_width(node, per, tokens)
        for node in leaves
        if (per := _norm_flops_per_element(node.type))
    ]
    widths = [w for w in widths if w >= 1.0]
    if not widths:  # no normalisation: the embedding dim (only then, so normalised trees keep their width)
        widths = [_embedding_width(node, tokens) for node in leaves if node.type == "Embedding"]
        widths = [w for w in widths if w >= 1.0]
    return round(max(widths), 3) if widths else None


def _norm_width(node: Any, flops_per_element: float, tokens: int) -> float:
    """A normalisation leaf's width: what the tracer read off its input (``notes["norm_width"]``),
    else its flops over the tree's tokens (the reference datasets: one token count per tree). A
    second tower of other tokens (CLIP's patches beside its text) made CLIP at width 16 read 32.5."""
    noted = node.notes.get(NORM_WIDTH_NOTE)
    if isinstance(noted, (int, float)) and not isinstance(noted, bool) and noted > 0:
        return float(noted)
    return float(node.features.get("flops", 0.0)) / (flops_per_element * tokens)


def _embedding_width(node: Any, tokens: int) -> float:
    """``embedding_dim`` of an ``Embedding`` leaf from its bytes (ids plus one row per token,
    :func:`pytest_irene.engine.features._embedding`); a lookup over fewer tokens than the
    batch (position ids of one row) reads narrower and loses to the token table in ``max``."""
    per_element = float(node.features.get("bytes_per_element", 4.0)) or 4.0
    return (float(node.features.get("mem_bytes", 0.0)) / tokens - EMBEDDING_ID_BYTES) / per_element


@dataclass
class TrainingRanges:
    """What a profile was trained on (all bounds inclusive)."""

    batch_size: list[float]
    """``[smallest, largest]`` batch size."""
    seq_len: list[float]
    """``[smallest, largest]`` sequence length."""
    widths: list[float] = field(default_factory=list)
    """Every distinct hidden size trained on (empty when no training tree had one): only two
    widths in the data say little about a third between them, so each is kept."""
    leaf_types: list[str] = field(default_factory=list)
    """Primitive types with their own regressor (others use the generic one)."""
    element_bytes: list[float] = field(default_factory=list)
    """Every element size trained on (4: fp32, 2: bf16/fp16); empty in a file written
    before it was recorded, which is then not checked for it."""

    @classmethod
    def from_trees(cls, trees: Sequence[EnergyTree]) -> TrainingRanges:
        batches = [float(t.batch_size) for t in trees if t.batch_size]
        seqs = [float(t.seq_len) for t in trees if t.seq_len]
        widths = sorted({w for w in (tree_width(t) for t in trees) if w is not None})
        types = sorted({n.type for t in trees for n in t.walk() if not n.children})
        sizes = sorted({tree_element_bytes(t) for t in trees}) if trees else []

        def span(values: list[float]) -> list[float]:
            return [min(values), max(values)] if values else []

        return cls(span(batches), span(seqs), widths, types, sizes)

    def merged(self, other: TrainingRanges) -> TrainingRanges:
        """The union of two ranges (a transferred profile knows its prior's and its own)."""

        def union(a: list[float], b: list[float]) -> list[float]:
            both = a + b
            return [min(both), max(both)] if both else []

        return TrainingRanges(
            union(self.batch_size, other.batch_size),
            union(self.seq_len, other.seq_len),
            sorted(set(self.widths) | set(other.widths)),
            sorted(set(self.leaf_types) | set(other.leaf_types)),
            sorted(set(self.element_bytes) | set(other.element_bytes)) if self.element_bytes and other.element_bytes else [],
        )

    def extrapolation(self, tree: EnergyTree) -> list[str]:
        """Why a prediction for ``tree`` leaves the training data (empty: it does not)."""
        reasons = []
        for what, value, span in (("batch", tree.batch_size, self.batch_size), ("sequence", tree.seq_len, self.seq_len)):
            if value and span and not span[0] <= value <= span[1]:
                reasons.append(f"{what} {value:g} outside the trained {_span(span)}")
        width = tree_width(tree)
        if width is not None and self.widths:
            if not any(abs(width - w) <= WIDTH_SLACK * w for w in self.widths):
                trained = ", ".join(f"{w:g}" for w in self.widths)
                reasons.append(f"width {width:g} not trained (trained: {trained})")
        if self.leaf_types:
            leaf_types = {n.notes.get("regressor_type", n.type) for n in tree.walk() if not n.children}
            unseen = sorted(leaf_types - set(self.leaf_types))  # LlamaRMSNorm is predicted as a LayerNorm
            if unseen:
                reasons.append("types never trained: " + ", ".join(unseen))
        if tree.root.type == "Generation" and any(c.scope == "decode" for c in tree.root.children):
            # calibration measures whole forwards only: no profile holds a decode-step measurement
            reasons.append(DECODE_EXTRAPOLATES)
        size = tree_element_bytes(tree)
        if self.element_bytes and size not in self.element_bytes:
            trained = ", ".join(_element_name(b) for b in self.element_bytes)
            reasons.append(f"{_element_name(size)} elements never trained (trained: {trained}); predicted from the bytes alone")
        reasons.extend(self._weight_reasons(tree, size))
        return reasons

    def _weight_reasons(self, tree: EnergyTree, element_bytes: float) -> list[str]:
        """Stored weights of an element size never trained (int8, fp8: ``notes["weight_dtype"]``, set by
        the tracer), in a model computing in a trained one: a ``quantize_dynamic`` or int8 weight-only
        model returns fp32, so its ``bytes_per_element`` alone passed for fp32. A size the element-size
        reason names already is not repeated (a whole model cast to fp8)."""
        if not self.element_bytes:
            return []
        found = tree_weight_dtypes(tree)
        trained = ", ".join(_element_name(b) for b in self.element_bytes)
        return [
            f"{_element_name(size)} weight elements ({', '.join(sorted(dtypes))}) never trained "
            f"(trained: {trained}); predicted from the bytes alone"
            for size, dtypes in sorted(found.items())
            if size not in self.element_bytes and size != element_bytes
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_size": list(self.batch_size),
            "seq_len": list(self.seq_len),
            "widths": list(self.widths),
            "leaf_types": list(self.leaf_types),
            **({"element_bytes": list(self.element_bytes)} if self.element_bytes else {}),
        }

    @classmethod
    def from_json(cls, obj: Any) -> TrainingRanges:
        obj = require(obj, ("batch_size", "seq_len", "widths", "leaf_types"), "training ranges")
        spans = {}
        for key in ("batch_size", "seq_len"):
            values = floats(obj[key], key)
            check(len(values) in (0, 2) and (not values or values[0] <= values[1]), f"training ranges field '{key}': expected [min, max] or []")
            spans[key] = values
        types = names(obj["leaf_types"], "training ranges field 'leaf_types'")
        widths = floats(obj["widths"], "widths")
        check(all(w > 0 for w in widths), "training ranges field 'widths': expected positive hidden sizes")
        sizes = floats(obj.get("element_bytes", []), "element_bytes")  # absent in files written before it
        check(all(b > 0 for b in sizes), "training ranges field 'element_bytes': expected element sizes in bytes > 0")
        return cls(spans["batch_size"], spans["seq_len"], widths, types, sizes)


def _span(span: Iterable[float]) -> str:
    lo, hi = span
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


__all__ = ["DECODE_EXTRAPOLATES", "TrainingRanges", "tree_element_bytes", "tree_weight_dtypes", "tree_width"]
