"""Explorer parts that need neither the tracer nor an energy model: parameters, cache, config, CLI checks."""

from __future__ import annotations

import pytest

from pytest_irene.explorer.app import LRUCache, create_app
from pytest_irene.explorer.models import compact_variants
from pytest_irene.explorer.params import ParameterError, parse_int, parse_int_list


def test_lru_cache_evicts_least_recently_used() -> None:
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert (cache.hits, cache.misses) == (3, 1)


def test_config_from_mapping_rejects_unknown_keys() -> None:
    app = create_app({"max_batch_size": 4, "allowed_modules": ["x.py:f"]})
    assert app.extensions["irene_explorer"].config.allowed_modules == ("x.py:f",)
    with pytest.raises(Exception, match="max_batch"):
        create_app({"max_batchsize": 4})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--max-batch-size", "0"], "--max-batch-size"),
        (["serve", "--allow-module", "no_such_module_xyz:make"], "no_such_module_xyz"),
        (["serve", "--allow-module", "just_a_module"], "MODULE:FACTORY"),
    ],
)
def test_serve_cli_rejects_bad_options_before_listening(argv, message) -> None:
    import argparse

    from pytest_irene.cli import serve
    from pytest_irene.errors import UsageError

    parser = argparse.ArgumentParser(prog="irene")
    serve.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    with pytest.raises(UsageError, match=message):
        args.func(args)


def test_parse_int_list_names_the_parameter() -> None:
    assert parse_int_list("32, 8,16,8", "--seq-lens") == [8, 16, 32]
    with pytest.raises(ParameterError, match="--seq-lens"):
        parse_int_list("8,abc", "--seq-lens")
    with pytest.raises(ParameterError, match="at most 64"):
        parse_int_list("8,128", "seq_lens", maximum=64)


def test_compact_bert_variants() -> None:
    specs = compact_variants("bert-base-uncased", [2, 4, 6, 8, 10, 12], [128, 256, 512, 768])
    assert len(specs) == 24
    small = specs[0]
    assert small.name == "bert-base-uncased[L=2,H=128]"
    assert dict(small.overrides) == {
        "num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512,
    }
    with pytest.raises(ParameterError, match="hidden"):
        compact_variants("bert-base-uncased", [2], [100])


def test_parse_int_limits() -> None:
    assert parse_int(" 16 ", "batch_size", maximum=32) == 16
    for bad, why in (("", "missing"), ("1.5", "integer"), ("0", "at least 1"), ("33", "server limit")):
        with pytest.raises(ParameterError, match=why) as info:
            parse_int(bad, "batch_size", maximum=32)
        assert info.value.parameter == "batch_size"


def test_an_integer_of_thousands_of_digits_is_a_parameter_error_not_int_s_valueerror() -> None:
    """``int()`` refuses strings past 4300 digits: the web app answered 500, the CLI a traceback."""
    from pytest_irene.explorer.models import resolve_model

    big = "9" * 5000
    with pytest.raises(ParameterError, match=r"batch_size: must be at most 32, got a 5000-digit number"):
        parse_int(big, "batch_size", maximum=32)
    with pytest.raises(ParameterError, match=r"seq_lens: must be at most 64, got a 5000-digit number"):
        parse_int_list(f"8,{big}", "seq_lens", maximum=64)
    with pytest.raises(ParameterError, match=r"model: .*as integers of a sane size"):
        resolve_model(f"bert-base-uncased[L={big},H=128]")
    assert parse_int("0" * 40 + "16", "batch_size") == 16  # leading zeros are not digits of the size
