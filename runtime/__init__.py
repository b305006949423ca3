"""Runtime support for training and evaluating recurc models on challenge data."""
from __future__ import annotations

from typing import Any

from runtime.bpb import BPBAccumulator, ByteCounter, bits_per_byte
from runtime.data import (DistributedTokenLoader, ShardError, find_shards, load_validation_tokens,
                          read_header, read_shard, validation_batches, write_shard)

__all__ = [
    "BPBAccumulator", "ByteCounter", "bits_per_byte",
    "DistributedTokenLoader", "ShardError", "find_shards", "load_validation_tokens",
    "read_header", "read_shard", "validation_batches", "write_shard",
    "DemoData", "build_demo_data",
]


def __getattr__(name: str) -> Any:
    # runtime.demo is imported lazily so `python -m runtime.demo` runs without
    # runpy's "found in sys.modules" warning.
    if name in ("DemoData", "build_demo_data"):
        from runtime import demo
        return getattr(demo, name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
