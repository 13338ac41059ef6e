"""Two example runs for the comparison tests: a tiny BERT and the same BERT with a widened feed-forward.

Built from configs on the meta device and predicted with the bundled irene-pc1
profile, so they are real traced-and-predicted trees, in well under a second
once transformers is imported.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pytest_irene.compare.records import CallRecord
from pytest_irene.compare.runfile import RunFile, write_run_file

HOST = {"cpu_model": "Example CPU 9000", "cpu_count": 8, "memory_gib": 31.3, "gpus": [], "driver_version": None}


@lru_cache(maxsize=None)
def _tree(intermediate_size: int, seq_len: int = 128):
    import torch
    from transformers import BertConfig, BertModel

    from pytest_irene.engine.predict.energy_model import EnergyModel
    from pytest_irene.engine.tracing import trace

    config = BertConfig(
        hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=intermediate_size, vocab_size=128
    )
    with torch.device("meta"):
        model = BertModel(config)
    tree = trace(model, torch.zeros(8, seq_len, dtype=torch.long, device="meta"), device="meta", model_name="bert-tiny")
    return EnergyModel.load("irene-pc1").predict(tree, features="model")


def bert_record(intermediate_size: int = 1024, *, nodeid: str = "tests/test_bert.py::test_encoder",
                label: str = "default", item_index: int = 0) -> CallRecord:
    """One call record of the tiny BERT with ``intermediate_size`` feed-forward units."""
    return CallRecord(nodeid, label, _tree(intermediate_size), "irene-pc1", "model", item_index=item_index,
                      test_file="tests/test_bert.py", test_line=12)


def write_run(path: Path, records: list[CallRecord], host: dict | None = None) -> Path:
    write_run_file(path, RunFile(records=records, host=dict(HOST if host is None else host), version="0.1.0",
                                 profile="irene-pc1", feature_mode="model"))
    return path
