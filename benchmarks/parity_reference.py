"""The fixed reference numbers of tests/test_parity.py, computed with the challenge's own script.

    python benchmarks/parity_reference.py /path/to/train_gpt.py

Imports that script as a module (nothing of it is copied here), builds its GPT at the shape the
test uses, on CPU in fp32 with its seed, and prints (1) statistics of the initial weights and
(2) the losses of its first steps with its optimizers (Adam for the embedding and the scalars, its
Muon for the matrices, its learning rates and Muon momentum warm-up) on fixed random tokens.
Paste the printed dict into tests/test_parity.py when the recipe changes on purpose.
"""
from __future__ import annotations

import importlib.util
import json
import sys

import torch

# the small shape of the test (the baseline's recipe at dim 64, 4 blocks, 32 tokens)
SHAPE = dict(vocab_size=1024, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2)
SEED, STEPS, BATCH, SEQ = 1337, 4, 4, 32
STAT_TENSORS = ("tok_emb.weight", "blocks.0.attn.c_q.weight", "blocks.0.attn.c_k.weight",
                "blocks.3.mlp.fc.weight", "blocks.3.attn.proj.weight", "skip_weights")


def fixed_batches(vocab: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """STEPS batches of random tokens from a fixed generator (the same in the test)."""
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(0, vocab, (STEPS, BATCH, SEQ + 1), generator=g)
    return [(t[:, :-1], t[:, 1:]) for t in toks]


def weight_stats(state: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    return {k: [float(state[k].double().sum()), float(state[k].double().std())] for k in STAT_TENSORS}


def main(path: str) -> None:
    spec = importlib.util.spec_from_file_location("challenge_train_gpt", path)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    h = ref.Hyperparameters
    torch.manual_seed(SEED)
    model = ref.GPT(**SHAPE, tie_embeddings=True, tied_embed_init_std=h.tied_embed_init_std,
                    logit_softcap=h.logit_softcap, rope_base=h.rope_base, qk_gain_init=h.qk_gain_init)
    stats = weight_stats(model.state_dict())
    named = list(model.blocks.named_parameters())
    patterns = ref.CONTROL_TENSOR_NAME_PATTERNS
    matrices = [p for n, p in named if p.ndim == 2 and not any(q in n for q in patterns)]
    scalars = [p for n, p in named if p.ndim < 2 or any(q in n for q in patterns)] + [model.skip_weights]
    adam = dict(betas=(h.beta1, h.beta2), eps=h.adam_eps)
    opts = [torch.optim.Adam([model.tok_emb.weight], lr=h.tied_embed_lr, **adam),
            ref.Muon(matrices, lr=h.matrix_lr, momentum=h.muon_momentum, backend_steps=h.muon_backend_steps),
            torch.optim.Adam(scalars, lr=h.scalar_lr, **adam)]
    losses = []
    for step, (x, y) in enumerate(fixed_batches(SHAPE["vocab_size"])):
        loss = model(x, y)
        loss.backward()
        frac = min(step / h.muon_momentum_warmup_steps, 1.0)
        opts[1].param_groups[0]["momentum"] = (1 - frac) * h.muon_momentum_warmup_start + frac * h.muon_momentum
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    print(json.dumps({"stats": stats, "losses": losses}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
