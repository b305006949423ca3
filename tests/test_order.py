"""The order DSL: the documented examples, canonical printing, and errors with carets."""
import pytest

from recurc.errors import SpecError
from recurc.order import MAX_VIRTUAL_LAYERS, parse_order

EXAMPLES = {
    "0..3,(4,5)x2,6..10": [0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 10],
    "A,B,C x4": list("ABC") * 4,
    "(A,B,C)x4": list("ABC") * 4,
    "A,B,C ×4": list("ABC") * 4,
    "1+4x3+1": [0] + [1, 2, 3, 4] * 3 + [5],
    "0,((1,2)x2,3)x2,4": [0, 1, 2, 1, 2, 3, 1, 2, 1, 2, 3, 4],
    "0..5,4 | 5,4,5,6..10": [0, 1, 2, 3, 4, 5, 4, 5, 4, 5, 6, 7, 8, 9, 10],
    "Ax2,B": ["A", "A", "B"],
    "4x3": [4, 4, 4],
    "2+3x2": [0, 1, 2, 3, 4, 2, 3, 4],
}


@pytest.mark.parametrize("text,expected", EXAMPLES.items())
def test_examples_expand(text, expected):
    order = parse_order(text)
    assert list(order.layers) == expected
    assert parse_order(order.canonical()) == order


def test_split_defaults_to_half_rounded_down_and_bar_sets_it():
    assert parse_order("0..8").split == 4
    bar = parse_order("0..5,4 | 5,4,5,6..10")
    assert bar.split == 7 and bar.encoder_layers == (0, 1, 2, 3, 4, 5, 4)
    assert parse_order("0..5 | 6..8").split == 6
    assert parse_order("0..5 | 6..8").canonical() == "0..5 | 6..8"


def test_prelude_loop_coda_counts_blocks():
    order = parse_order("1+4x3+1")
    assert len(set(order.layers)) == 6 and len(order) == 14


def test_canonical_form_is_one_normal_form():
    assert parse_order("4,5,4,5").canonical() == parse_order("(4,5)x2").canonical() == "(4,5)x2"
    assert parse_order("0,1,2,3,(4,5)x2,6,7,8,9,10").canonical() == "0..3,(4,5)x2,6..10"
    assert parse_order("A,B,C,A,B,C").canonical() == "(A,B,C)x2"
    assert parse_order("(4,5)x2") == parse_order("4,5,4,5")


def test_loop_count_rewrite():
    order = parse_order("A,B,C x4")
    assert len(order.with_loop_count(2)) == 6
    assert parse_order("0..3,(4,5)x2,6..10").with_loop_count(3).canonical() == "0..3,(4,5)x3,6..10"
    with pytest.raises(SpecError, match="exactly one repeat"):
        parse_order("0..8").with_loop_count(2)


@pytest.mark.parametrize("text,col,fragment", [
    ("0,1 x2,3", 7, "spaced"),
    ("(0,1)x0", 7, "at least 1"),
    ("0..", 4, "expected a number"),
    ("a,b", 1, "upper-case"),
    ("0-3", 2, "range"),
    ("()", 2, "empty loop"),
    ("5..2", 1, "backwards"),
])
def test_errors_point_at_the_character(text, col, fragment):
    with pytest.raises(SpecError) as info:
        parse_order(text)
    err = info.value
    assert err.where == f"<order>:{col}"
    assert fragment in err.render()
    caret_line = err.snippet.splitlines()[-1]
    assert caret_line.index("^") - 2 == col - 1


@pytest.mark.parametrize("text", ["(0,1)x100000000", "(0,1)x1000,(2,3)x1000", "0..99999",
                                  "(" * 40 + "0" + ")" * 40, "0," * 3000])
def test_hostile_orders_are_refused_before_expansion(text):
    with pytest.raises(SpecError):
        parse_order(text)


def test_limit_is_documented_value():
    assert len(parse_order(f"0x{MAX_VIRTUAL_LAYERS}")) == MAX_VIRTUAL_LAYERS
    with pytest.raises(SpecError, match="virtual layers"):
        parse_order(f"0x{MAX_VIRTUAL_LAYERS + 1}")
