"""Command-line plumbing that the other tests do not reach."""
import pytest

from recurc.errors import SpecError
from recurc.runtime_cli import _take_gpus


def test_gpus_may_follow_the_spec_among_train_options():
    assert _take_gpus(["--steps", "3", "--gpus", "8", "model.dim=576"], 1) == (8, ["--steps", "3", "model.dim=576"])
    assert _take_gpus(["--gpus=2"], 1) == (2, [])
    assert _take_gpus(["--data", "x"], 4) == (4, ["--data", "x"])
    with pytest.raises(SpecError, match="positive number"):
        _take_gpus(["--gpus", "two"], 1)
