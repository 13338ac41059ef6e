"""The energy of generation: a prefill forward, then one decode step per new token.

What LLM teams pay for is ``generate()``, not one forward. Its tree has a root
``Generation`` with two children:

* ``prefill``: the forward over the prompt (the usual module tree, scopes
  prefixed ``prefill.``);
* ``decode``: every decode step with the KV cache, grouped so the tree stays
  readable: the module tree of one step (scopes prefixed ``decode.``) whose
  features and energies are summed over the ``max_new_tokens - 1`` steps (the
  prefill produces the first new token). :meth:`GenerationTree.decode_step`
  gives one step's own tree and ``step_energies_j`` each step's energy.

Steps differ only in the KV length, and every node's features are affine in it
(attention products and softmax grow with the cache, projections do not). So on
the meta device two steps are traced, the rest is derived exactly, and a third
trace (the last step) checks the affine law; where it does not hold (a
sliding-window cache) every step is traced. On a real device every step runs
for real (greedy next token) and is traced, so data-dependent code such as real
MoE routing is followed. The loop is written here with transformers'
``DynamicCache`` (``EncoderDecoderCache`` for T5/BART/Whisper, whose prefill is the
encoder plus the decoder's start token and whose steps are the decoder alone):
``model.generate`` cannot run on meta (it stops on token values).

How the steps are predicted: :mod:`pytest_irene.engine.generation_tree` (torch-free).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from pytest_irene.engine import datadep
from pytest_irene.engine.generation_tree import SUMMED, DecodeSteps, GenerationTree, copy_node, signature
from pytest_irene.engine.positions import check_positions
from pytest_irene.engine.inputs import check_count, ids_length, to_device
from pytest_irene.engine.model_inputs import forward_params
from pytest_irene.engine.tracing import model_label, prepare_target, resolve_callable, trace_prepared
from pytest_irene.engine.tree import EnergyNode, EnergyTree
from pytest_irene.errors import TraceError, UsageError

__all__ = ["trace_generate"]

# -- tracing ----------------------------------------------------------------------------


#: Inputs laid out ``(batch, prompt_len)``: a 1-D one is a batch of one prompt, as :func:`trace` takes it.
_PER_TOKEN = ("input_ids", "attention_mask")


def _batched(inputs: Any) -> Any:
    """``inputs`` with 1-D ids (and mask) made a batch of one ``(1, prompt_len)``; the decode loop
    appends tokens along dim 1, so other shapes are refused naming the argument."""
    if isinstance(inputs, torch.Tensor):
        return _prompt_ids(inputs, "inputs")
    if not isinstance(inputs, Mapping):
        return inputs
    out = dict(inputs)
    for key in _PER_TOKEN:
        if isinstance(out.get(key), torch.Tensor):
            out[key] = _prompt_ids(out[key], f"inputs[{key!r}]")
    return out


def _prompt_ids(t: torch.Tensor, argument: str) -> torch.Tensor:
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[1] < 1 or t.is_floating_point() or t.is_complex():
        raise UsageError(
            f"trace_generate: {argument}: expected integer token ids of shape (batch, prompt_len) (or (prompt_len,) "
            f"for one prompt), got a {str(t.dtype).removeprefix('torch.')} tensor of shape {tuple(t.shape)}"
        )
    return t


def _ids_and_rest(inputs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    if isinstance(inputs, torch.Tensor):
        return inputs, {}
    if isinstance(inputs, Mapping) and isinstance(inputs.get("input_ids"), torch.Tensor):
        rest = {k: v for k, v in inputs.items() if k != "input_ids"}
        return inputs["input_ids"], rest
    raise UsageError("trace_generate: inputs must be a (batch, prompt_len) tensor of token ids or a dict with input_ids")


class _DecoderOnly:
    """A causal LM: the prefill reads the prompt; a step reads one token, its position and the mask over
    the cache."""

    def __init__(self, inputs: Any, dev: torch.device, module: torch.nn.Module) -> None:
        ids, rest = _ids_and_rest(inputs)
        self.ids, self.rest = to_device((ids, rest), dev)
        self.batch, self.prompt = int(ids.shape[0]), int(ids.shape[1])
        self.kv_start = self.prompt  # the cache holds the prompt when decoding starts
        self.like = self.ids  # what the next token's batch and dtype follow
        self.position_ids = self.rest.pop("position_ids", None)
        if self.position_ids is None:
            self.position_ids = _generation_positions(module, self.ids, self.rest, dev)
        self.mask_on_decode = _decode_reads_mask(module, self.ids, self.rest)

    def new_cache(self, config: Any) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=config) if config is not None else DynamicCache()

    def prefill_inputs(self) -> dict[str, Any]:
        out = {**self.rest, "input_ids": self.ids}
        if self.position_ids is not None:
            out["position_ids"] = self.position_ids
        return out

    def after_prefill(self, output: Any, prefill: EnergyTree) -> None:
        pass

    def positions(self, new_tokens: int) -> tuple[int, str]:
        """Positions the generation reads: the prompt, then every new token but the last (never fed back)."""
        what = f"a prompt of {self.prompt} token(s) + {new_tokens} new token(s), the last not fed back"
        return self.prompt + new_tokens - 1, what

    def step_inputs(self, token: torch.Tensor, kv_len: int) -> dict[str, Any]:
        """One decode step's inputs: the new token, its position (the prompt's last + the tokens since,
        as ``generate()`` extends them) and the mask extended over the cache."""
        out: dict[str, Any] = {"input_ids": token}
        if self.position_ids is not None:
            out["position_ids"] = self.position_ids[..., -1:] + (kv_len + 1 - self.prompt)
        mask = self.rest.get("attention_mask")
        if isinstance(mask, torch.Tensor) and self.mask_on_decode:
            grow = kv_len + 1 - mask.shape[1]
            ones = torch.ones((mask.shape[0], grow), dtype=mask.dtype, device=mask.device)
            out["attention_mask"] = torch.cat([mask, ones], dim=1)
        return out


def _decode_reads_mask(module: torch.nn.Module, ids: torch.Tensor, rest: dict[str, Any]) -> bool:
    """Whether ``generate()`` hands a decode step the attention mask: the model's own
    ``prepare_inputs_for_generation`` decides. Mamba's and FalconMamba's drop it (their forward
    broadcast the one new token against the whole mask, so every step ran the whole prefix again,
    growing by a token each step); where the method cannot be asked, the mask is kept."""
    if not isinstance(rest.get("attention_mask"), torch.Tensor):
        return False
    prepare = getattr(module, "prepare_inputs_for_generation", None)
    if prepare is None:
        return True
    mask = rest["attention_mask"]
    try:  # asked with CPU stand-ins: on meta the method reads values (a mask's sum) meta tensors lack
        step = prepare(torch.zeros(tuple(ids.shape), dtype=ids.dtype), use_cache=True, is_first_iteration=False,
                       attention_mask=torch.ones(tuple(mask.shape), dtype=mask.dtype))
    except Exception:  # an older or custom signature: keep the mask, as before
        return True
    return not (isinstance(step, dict) and "attention_mask" in step and step["attention_mask"] is None)


def _generation_positions(module: torch.nn.Module, ids: torch.Tensor, rest: dict[str, Any],
                          dev: torch.device) -> torch.Tensor | None:
    """The prompt's position ids as ``generate()`` makes them for a model whose forward takes
    ``position_ids`` (from the mask, or M-RoPE's 3-D positions of an image's patches for Qwen2-VL),
    with the model's own ``_prepare_position_ids_for_generation``; ``None`` (the forward makes them)
    for a model without it. Left to the forward, a multimodal-RoPE model's decode step read positions
    over the whole mask, not its one token, and failed."""
    prepare = getattr(module, "_prepare_position_ids_for_generation", None)
    if prepare is None or "position_ids" not in forward_params(module):
        return None
    try:
        return prepare(ids, dict(rest))
    except Exception as exc:  # the model's own code, on the user's inputs
        hint = datadep.meta_failure_hint(exc) if dev.type == "meta" else ""
        raise TraceError(f"trace_generate: {type(module).__name__}'s position ids for generation (as generate() "
                         f"makes them) failed: {type(exc).__name__}: {exc}{hint}") from exc


class _EncoderDecoder:
    """T5, BART, Whisper, Switch: the prefill is the encoder over the inputs plus the decoder's first step
    (the start token), as ``generate()`` runs it; a step is the decoder alone, one token against its
    self-attention cache and the encoder's output (the encoder never runs again)."""

    def __init__(self, inputs: Any, dev: torch.device, config: Any, module: torch.nn.Module) -> None:
        if isinstance(inputs, torch.Tensor):
            inputs = {"input_ids": inputs}
        tensors = [v for v in inputs.values() if isinstance(v, torch.Tensor)] if isinstance(inputs, Mapping) else []
        if not tensors or "decoder_input_ids" in inputs:
            raise UsageError(
                "trace_generate: inputs of an encoder-decoder model must be the encoder's inputs (input_ids, "
                "input_features, attention_mask); the decoder starts from the model's decoder_start_token_id"
            )
        start = _decoder_start(config, module)
        self.inputs = to_device(dict(inputs), dev)
        self.batch = int(tensors[0].shape[0])
        self.start = torch.full((self.batch * _decoder_rows(config), 1), start, dtype=torch.long, device=dev)
        self.prompt = 0  # the encoder's tokens per sample, known once the prefill is traced
        self.kv_start = 1  # the decoder's cache holds the start token when decoding starts
        self.like = self.start
        self.encoder_outputs: Any = None

    def new_cache(self, config: Any) -> Any:
        from transformers import DynamicCache, EncoderDecoderCache

        return EncoderDecoderCache(DynamicCache(), DynamicCache())  # self-attention, cross-attention

    def prefill_inputs(self) -> dict[str, Any]:
        return {**self.inputs, "decoder_input_ids": self.start}

    def after_prefill(self, output: Any, prefill: EnergyTree) -> None:
        from transformers.modeling_outputs import BaseModelOutput, MoEModelOutput

        hidden = getattr(output, "encoder_last_hidden_state", None)
        if not isinstance(hidden, torch.Tensor):
            raise TraceError(
                "trace_generate: the encoder-decoder model returned no encoder_last_hidden_state; pass a "
                "*ForConditionalGeneration model (it returns the encoder's output and the logits)"
            )
        if hasattr(output, "encoder_router_logits"):  # a sparse encoder (Switch): the steps read its routers' logits
            self.encoder_outputs = MoEModelOutput(last_hidden_state=hidden, router_logits=output.encoder_router_logits)
        else:
            self.encoder_outputs = BaseModelOutput(last_hidden_state=hidden)
        self.prompt = prefill.seq_len

    def positions(self, new_tokens: int) -> tuple[int, str]:
        """Positions the decoder reads (the start token, then every new token but the last), or the
        encoder's ids when longer (an encoder and a decoder sharing one table)."""
        encoder = ids_length(self.inputs) or 0
        what = f"{new_tokens} new token(s) from the decoder's start token"
        what += f"; {encoder} encoder token(s)" if encoder else ""
        return max(new_tokens, encoder), what

    def step_inputs(self, token: torch.Tensor, kv_len: int) -> dict[str, Any]:
        out: dict[str, Any] = {"decoder_input_ids": token, "encoder_outputs": self.encoder_outputs}
        if isinstance(self.inputs.get("attention_mask"), torch.Tensor):
            out["attention_mask"] = self.inputs["attention_mask"]  # the encoder's: cross-attention keeps it
        return out


def _decoder_rows(config: Any) -> int:
    """Decoder rows per sample: MusicGen's decoder reads ``num_codebooks`` audio codes per step, its ids
    laid out ``(batch · codebooks, length)`` as ``generate()`` starts them; one elsewhere. Started with one
    row per sample, its decoder read the batch as ``batch / codebooks`` samples, which the encoder's
    output no longer matched (the decode steps failed on a real device, and were wrong on meta)."""
    rows = getattr(getattr(config, "decoder", None), "num_codebooks", None)
    return rows if isinstance(rows, int) and not isinstance(rows, bool) and rows > 0 else 1


def _decoder_start(config: Any, module: torch.nn.Module) -> int:
    for source in (config, getattr(module, "generation_config", None)):
        for name in ("decoder_start_token_id", "pad_token_id", "bos_token_id"):
            value = getattr(source, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    raise UsageError(
        f"trace_generate: {type(module).__name__} is an encoder-decoder model without a decoder_start_token_id "
        "(nor pad or bos token id) in its config; set config.decoder_start_token_id"
    )


def _cache_kwargs(module: torch.nn.Module, config: Any) -> dict[str, Any]:
    """How this model takes its cache (``cache`` in transformers 5, ``past_key_values`` before), and
    ``logits_to_keep=1`` where supported, as ``generate()`` passes it (only the last position's logits).

    ``use_cache=True`` is passed to a decoder-only model, and to an encoder-decoder only where its
    config switches the cache off: an encoder-decoder's forward may hand ``use_cache`` to its encoder
    too, which refuses it (Switch Transformers), while its decoder uses the cache it is given
    (``generate()`` never hands it to the encoder, which it runs apart)."""
    params = forward_params(module)
    out: dict[str, Any] = {"cache_name": "cache" if "cache" in params else "past_key_values"}
    if not getattr(config, "is_encoder_decoder", False) or getattr(config, "use_cache", True) is False:
        out["use_cache"] = True
    if "logits_to_keep" in params:
        out["logits_to_keep"] = 1
    return out


def _makes_its_own_cache(module: torch.nn.Module) -> bool:
    """Whether the model refuses transformers' ``DynamicCache`` and builds its own cache (MiniMax's
    linear attention), as ``generate()`` asks it (``_supports_default_dynamic_cache``): then its prefill
    gets no cache and its steps the one the prefill returned. Given a ``DynamicCache``, MiniMax failed.
    Only for a forward that takes a cache by name: RWKV's recurrent ``state`` is another input, whose
    values do not change what a step costs."""
    supports = getattr(type(module), "_supports_default_dynamic_cache", None)
    if not ({"cache", "past_key_values"} & forward_params(module)) or not callable(supports):
        return False
    try:
        return not supports()
    except Exception:  # noqa: BLE001 - a model's own code: no answer is the default cache
        return False


def _returned_cache(output: Any, how: dict[str, Any], name: str) -> Any:
    """The cache a model built itself during its prefill, from its output (``cache`` in transformers 5,
    ``past_key_values`` before)."""
    for key in (how["cache_name"], "cache", "past_key_values"):
        cache = getattr(output, key, None)
        if cache is not None:
            return cache
    raise TraceError(f"trace_generate: {name} builds its own cache (no DynamicCache), but its prefill returned none "
                     f"(no {how['cache_name']!r} in its output) to decode against")


def _with_cache(inputs: dict[str, Any], cache: Any, how: dict[str, Any]) -> dict[str, Any]:
    extra = {k: v for k, v in how.items() if k != "cache_name"}
    return {**inputs, how["cache_name"]: cache, **extra}


def _resize_cache(cache: Any, length: int) -> bool:
    """Set every layer of a meta DynamicCache (an encoder-decoder's self-attention one) to KV length
    ``length``; False when a layer is not a plain one."""
    layers = getattr(getattr(cache, "self_attention_cache", cache), "layers", None)
    if not layers or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
        return False
    for layer in layers:
        for name in ("keys", "values"):
            t = getattr(layer, name)
            setattr(layer, name, torch.empty((*t.shape[:-2], length, t.shape[-1]), dtype=t.dtype, device="meta"))
    return True


def _greedy(output: Any, like: torch.Tensor) -> torch.Tensor:
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if not isinstance(logits, torch.Tensor):
        raise TraceError(
            "trace_generate: the model returned no logits to pick the next token from; pass a causal language "
            "model with its head (AutoModelForCausalLM, *ForCausalLM), not the bare transformer"
        )
    if logits.is_meta:
        return torch.empty((like.shape[0], 1), dtype=like.dtype, device="meta")
    return logits[:, -1:, :].argmax(dim=-1).to(like.dtype)


def trace_generate(
    model: torch.nn.Module,
    inputs: Any,
    *,
    max_new_tokens: int,
    device: str | torch.device = "meta",
    model_name: str | None = None,
) -> GenerationTree:
    """The energy tree of generating ``max_new_tokens`` tokens after the prompt ``inputs`` (greedy, no early stop).

    ``model`` is a causal language model taking ``input_ids``, ``attention_mask``,
    ``past_key_values`` and ``use_cache`` (transformers' ``*ForCausalLM``), with
    ``inputs`` the prompt ids ``(batch, prompt_len)`` (a 1-D tensor is one prompt, as in
    :func:`trace`) or a dict with ``input_ids`` (and ``attention_mask``); or an encoder-decoder
    (``*ForConditionalGeneration``: T5, BART, Whisper), with ``inputs`` the encoder's (``input_ids`` or ``input_features``,
    ``attention_mask``): the prefill is the encoder plus the decoder's start token, and
    ``decode`` the decoder's steps against the encoder's output. See the module docstring for how decode steps are
    traced. ``tree.per_token_j`` is the predicted energy per new token after
    :meth:`EnergyModel.predict`. A generation longer than the model's absolute position
    table is refused (:mod:`pytest_irene.engine.positions`), as on a real device.
    """
    max_new_tokens = check_count("max_new_tokens", max_new_tokens)
    module, method = resolve_callable(model, "trace_generate")
    if method is not None:
        raise UsageError("trace_generate: pass the model itself (it runs the decode loop), not one of its methods")
    config = getattr(module, "config", None)
    if config is not None:
        from pytest_irene.engine.architectures import generation_problem, is_encoder_only

        if is_encoder_only(config):  # its *LMHeadModel runs unmasked: a decode loop it never runs
            raise UsageError(f"trace_generate: {generation_problem(config)}")
    dev = torch.device(device)
    inputs = _batched(inputs)
    plan: _DecoderOnly | _EncoderDecoder = (
        _EncoderDecoder(inputs, dev, config, module) if getattr(config, "is_encoder_decoder", False)
        else _DecoderOnly(inputs, dev, module)
    )
    name = model_name or model_label(module)
    length, what = plan.positions(max_new_tokens)
    check_positions(module, length, model_name=name, what=what)
    target = prepare_target(module, dev)
    own_cache = _makes_its_own_cache(module)
    cache = None if own_cache else plan.new_cache(config)
    outputs: list[Any] = []
    how = _cache_kwargs(module, config)
    prefill = trace_prepared(target, None, _with_cache(plan.prefill_inputs(), cache, how),
                             dev, model_name=name, on_output=outputs.append)
    if own_cache:
        cache = _returned_cache(outputs[-1], how, name)
    plan.after_prefill(outputs[-1], prefill)
    steps = _trace_steps(target, dev, name, (cache, how), _greedy(outputs[-1], plan.like), plan, max_new_tokens - 1)
    return _assemble(prefill, steps, name, plan.batch, plan.prompt, max_new_tokens, dev)


def _trace_steps(target: Any, dev: torch.device, name: str, cached: tuple[Any, dict[str, Any]], token: torch.Tensor,
                 plan: _DecoderOnly | _EncoderDecoder, count: int) -> DecodeSteps | None:
    """Trace the decode steps: two and a check on meta when the affine law holds, else every one."""
    if count <= 0:
        return None
    cache, how = cached
    prompt = plan.kv_start  # the cache's length at the first decode step
    outputs: list[Any] = []

    def step(kv_len: int, token: torch.Tensor) -> EnergyTree:
        tree = trace_prepared(target, None, _with_cache(plan.step_inputs(token, kv_len), cache, how), dev, model_name=name,
                              batch_size=plan.batch, seq_len=1, on_output=outputs.append)
        tree.meta["kv_len"] = kv_len
        return tree

    first = step(prompt, token)
    if count == 1:
        return DecodeSteps(template=first, count=1, prompt_len=prompt, traced=[first])
    traced = [first]
    if dev.type == "meta":
        second = step(prompt + 1, token)
        slope = _slope(first, second)
        if slope is not None and count == 2:
            return DecodeSteps(template=first, count=count, prompt_len=prompt, slope=slope)
        if slope is not None and _resize_cache(cache, prompt + count - 1):
            last = step(prompt + count - 1, token)
            if _affine_holds(first, slope, last, count - 1):
                return DecodeSteps(template=first, count=count, prompt_len=prompt, slope=slope)
            _resize_cache(cache, prompt + 2)  # not affine: trace every step after the second
        traced.append(second)
    while len(traced) < count:
        token = _greedy(outputs[-1], token)
        traced.append(step(prompt + len(traced), token))
    return DecodeSteps(template=first, count=count, prompt_len=prompt, traced=traced)


def _slope(first: EnergyTree, second: EnergyTree) -> list[dict[str, float]] | None:
    if signature(first) != signature(second):
        return None
    return [{k: b.features[k] - a.features[k] for k in SUMMED} for a, b in zip(first.walk(), second.walk())]


def _affine_holds(first: EnergyTree, slope: list[dict[str, float]], last: EnergyTree, index: int) -> bool:
    if signature(first) != signature(last):
        return False
    for a, s, z in zip(first.walk(), slope, last.walk()):
        for k in SUMMED:
            want = a.features[k] + index * s[k]
            if abs(z.features[k] - want) > 1e-9 * max(abs(want), 1.0):
                return False
    return True


def _assemble(prefill: EnergyTree, steps: DecodeSteps | None, name: str, batch: int, prompt: int,
              new_tokens: int, dev: torch.device) -> GenerationTree:
    root = EnergyNode(scope="", type="Generation", level="model")
    pre = copy_node(prefill.root, "prefill")
    pre.level = "module"
    root.add_child(pre)
    if steps is not None:
        dec = copy_node(steps.template.root, "decode")
        dec.level = "module"
        for node, summed in zip(dec.walk(), steps.summed(), strict=True):
            node.features.update(summed)
            node.features["seq_len"] = float(steps.count)
            node.features["batch_seq"] = float(batch * steps.count)
        root.add_child(dec)
    for k in SUMMED:
        root.features[k] = sum(c.features[k] for c in root.children)
    root.features.update({k: v for k, v in prefill.root.features.items() if k not in root.features})  # params, dtype
    root.features.update(batch_size=float(batch), seq_len=float(prompt), batch_seq=float(batch * prompt))
    tree = GenerationTree(root=root, model_name=name, batch_size=batch, seq_len=prompt, prefill=prefill, steps=steps)
    tree.meta.update(traced_on=str(dev), new_tokens=new_tokens, prompt_len=prompt,
                     decode_steps=steps.count if steps is not None else 0,
                     decode_derived=bool(steps is not None and steps.slope is not None))
    return tree
