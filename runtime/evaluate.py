"""Validation: mean loss and exact bits per byte over the validation tokens, split across ranks.

Each rank evaluates a contiguous, disjoint range of validation sequences
(`runtime.data.validation_batches`); the (nats, tokens, bytes) sums are all-reduced once at the
end, so every rank returns the same BPB as a single-process evaluation of the whole set.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from runtime.bpb import BPBAccumulator, ByteCounter
from runtime.data import load_validation_tokens, validation_batches


@dataclass(frozen=True)
class EvalResult:
    loss: float      # mean cross-entropy per token, nats
    bpb: float
    tokens: int
    bytes: int


@dataclass
class ValidationSet:
    tokens: np.ndarray          # uint16, k * seq_len + 1
    counter: ByteCounter
    seq_len: int

    @classmethod
    def load(cls, pattern: str, tokenizer: str, seq_len: int, vocab_size: int,
             max_tokens: int | None, device: torch.device) -> "ValidationSet":
        tokens = load_validation_tokens(pattern, seq_len)
        if max_tokens is not None:  # the spec's val_tokens cap, kept a whole number of sequences
            n = max(1, max_tokens // seq_len) * seq_len
            tokens = tokens[: min(tokens.size, n + 1)]
        top = int(tokens.max())
        if top >= vocab_size:
            raise ValueError(f"validation token id {top} does not fit the model's vocab_size {vocab_size}")
        counter = ByteCounter.from_sentencepiece(tokenizer, vocab_size=vocab_size, device=device)
        return cls(tokens, counter, seq_len)


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (as the challenge trains); full fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, val: ValidationSet, *, path: str, batch_seqs: int, device: torch.device,
             rank: int = 0, world_size: int = 1) -> EvalResult:
    """Loss and BPB of `model` (called as model(x, y, path=path) -> mean CE) on `val`."""
    was_training = model.training
    model.eval()
    acc = BPBAccumulator(val.counter)
    for x, y in validation_batches(val.tokens, val.seq_len, batch_seqs, rank, world_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast_context(device):
            loss = model(x, y, path=path)
        acc.update_mean(loss.detach().float(), x, y)
    acc.all_reduce()
    model.train(was_training)
    return EvalResult(loss=acc.mean_loss(), bpb=acc.bpb(), tokens=acc.tokens, bytes=acc.bytes)
