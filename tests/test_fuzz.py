"""Hostile input: random order strings and random YAML specs give a SpecError or a result, each
within a bounded time — never another exception, never an expansion before the limits apply."""
import time
import tracemalloc

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recurc.errors import SpecError
from recurc.order import parse_order
from recurc.plan import make_plan
from recurc.spec import spec_from_text

ORDER_ALPHABET = "0123456789..,()x× |+ABCxa-"
# Pieces that make syntactically plausible orders, so the parser's deeper states are reached too.
ORDER_PIECES = ["0", "1", "4", "10", "99999", "1000000", "0..3", "3..0", "(", ")", ",", "x2", "x0", "x100000",
                " x4", "×3", "|", " | ", "+", "A", "B", "..", "x", "(4,5)x2", "1+4x3+1"]

ORDERS = st.one_of(st.text(alphabet=ORDER_ALPHABET, max_size=40),
                   st.lists(st.sampled_from(ORDER_PIECES), max_size=14).map("".join))

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 100_000), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["0..8", "A,B x2", "relu2", "brotli", "std", "unet"]))
KEYS = st.sampled_from(["model", "dim", "heads", "kv_heads", "order", "blocks", "quant", "groups", "mlp", "bits",
                        "compressor", "name", "per_pass", "schedule", "features", "index", "xsa_last", "skips",
                        "loops_at", "progressive", "sharing", "extends", "vocab_size", "rope", "dims", "clip"])
DOCS = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(KEYS, inner, max_size=5)), max_leaves=20)

SLOW = 2.0  # seconds: far above the real cost (~ms), far below an expansion of a hostile order


def _bounded(fn, *args) -> None:
    tracemalloc.start()
    start = time.process_time()  # CPU time: a loaded machine stretches wall time, not work
    try:
        fn(*args)
    except SpecError:
        pass
    finally:
        elapsed = time.process_time() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < SLOW, f"{args!r} took {elapsed:.2f}s"
    assert peak < 64 * 2**20, f"{args!r} peaked at {peak / 2**20:.0f} MiB"


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(ORDERS)
@pytest.mark.slow
def test_random_orders_give_spec_errors_or_orders(text):
    _bounded(parse_order, text)


def _spec_and_plan(text: str) -> None:
    make_plan(spec_from_text(text))


@settings(max_examples=2_500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.one_of(DOCS.map(lambda d: {"order": "0..3", **d} if isinstance(d, dict) else d), DOCS)
       .map(lambda d: yaml.safe_dump(d, allow_unicode=True)))
@pytest.mark.slow
def test_random_yaml_specs_give_spec_errors_or_plans(text):
    _bounded(_spec_and_plan, text)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.text(alphabet="abc: -[]{}&*!|>'\"\n\t#0123456789.,", max_size=60))
@pytest.mark.slow
def test_random_yaml_text_gives_spec_errors(text):
    _bounded(_spec_and_plan, text)
