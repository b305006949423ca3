"""Text from a spec reaches the emitted script only as data: hostile names and descriptions give
a script that compiles, executes nothing of theirs, and carries the text back unchanged."""
from __future__ import annotations

import ast
import base64
import lzma
import json
import re
from pathlib import Path

import pytest

from recurc.emit import PACKINGS, emit
from recurc.errors import SpecError
from recurc.plan import make_plan
from recurc.spec import load_spec

HOSTILE = [
    'x"); __import__("os").system("touch pwned"); ("',
    "x'); __import__('os').system('touch pwned'); ('",
    'a"""b',
    "a'''b",
    "line one\nline two",
    "back\\slash",
    "C:\\Users\\me",
    "ends with a backslash \\",
    "\r\n\x0c\u2028",
    '"""; import os; os.system("touch pwned"); """',
]


TINY = Path(__file__).resolve().parents[1] / "specs" / "tiny.yaml"


def _spec(tmp_path: Path, key: str, text: str) -> Path:
    """A spec extending tiny.yaml with `key` set to `text` (a JSON string is a YAML string)."""
    spec = tmp_path / "s.yaml"
    spec.write_text(f"extends: {json.dumps(str(TINY))}\n{key}: {json.dumps(text)}\n")
    return spec


def _executed_code(src: str) -> str:
    m = re.search(r'b85decode\("([^"]+)"\)', src)
    return lzma.decompress(base64.b85decode(m.group(1))).decode() if m else src


def _literal(code: str, name: str):
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not assigned")


# the first case in the everyday tier, all of them in the full suite (each compiles a script)
@pytest.mark.parametrize("text", [t if i == 0 else pytest.param(t, marks=pytest.mark.slow)
                                  for i, t in enumerate(HOSTILE)])
def test_hostile_description_is_data(tmp_path, text):
    plan = make_plan(load_spec(_spec(tmp_path, "description", text)))
    for packing in PACKINGS:
        src = emit(plan, packing)
        code = _executed_code(src)
        compile(code, "train_gpt.py", "exec")
        assert _literal(code, "SPEC_DESCRIPTION") == text
        # no call to os.system / __import__ anywhere in what runs
        calls = {ast.unparse(n.func) for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)}
        assert "__import__" not in calls and "os.system" not in calls


@pytest.mark.slow
def test_hostile_name_is_data_or_refused(tmp_path):
    for text in HOSTILE:
        try:
            plan = make_plan(load_spec(_spec(tmp_path, "name", text)))
        except SpecError:
            continue       # a name may be refused outright; it must never reach the code as code
        for packing in PACKINGS:
            code = _executed_code(emit(plan, packing))
            compile(code, "train_gpt.py", "exec")
            assert _literal(code, "SPEC_NAME") == text


@pytest.mark.parametrize("value", ["nan", ".nan", "inf", "-.inf"])
def test_non_finite_floats_refused(tmp_path, value):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"extends: {TINY}\nmodel:\n  q_gain_init: {value}\n")
    with pytest.raises(SpecError):
        load_spec(spec)
