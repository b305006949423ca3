"""The `recurc` command as a user meets it: one command table, option spellings, one-line errors
with hints, preflight before training, plain tables when piped, and the Python API."""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import recurc
from recurc.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parent.parent
RECURC = str(Path(sys.executable).with_name("recurc"))


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([RECURC, *args], cwd=cwd, capture_output=True, text=True)


def test_the_command_table_is_the_parser():
    subs = _subparsers()
    assert list(subs) == [c.name for c in COMMANDS]
    assert {"show", "estimate", "diff", "render", "variants", "build", "train", "measure", "emit", "data",
            "schema"} == set(subs)


def test_option_spellings_are_the_same_everywhere():
    for name, p in _subparsers().items():
        opts = {s: a for a in p._actions for s in a.option_strings}
        if "--json" in opts:
            assert opts["--json"].nargs == 0, f"{name}: --json is a flag"
        if "--output" in opts:
            assert "-o" in opts and opts["-o"] is opts["--output"], f"{name}: -o/--output"
        positionals = [a.dest for a in p._actions if not a.option_strings]
        if name not in ("diff", "schema", "data"):
            assert positionals[0] == "spec", f"{name}: the spec is the first positional"


def test_version_and_missing_spec(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"recurc {recurc.__version__}"
    with pytest.raises(SystemExit) as e:
        main(["show"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.splitlines()[0] == "error: the following arguments are required: spec"
    assert "recurc show --help" in err


def test_unknown_option_is_one_error_line(capsys):
    with pytest.raises(SystemExit):
        main(["show", "specs/tiny.yaml", "--bogus"])
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: unrecognized arguments: --bogus" and err[1].startswith("hint:")
    with pytest.raises(SystemExit):
        main(["schema", "model.dim=3"])
    assert "takes no overrides" in capsys.readouterr().err


def test_did_you_mean_and_override_positions(capsys):
    assert main(["show", str(ROOT / "specs/baseline.yaml"), "model.dimm=576"]) == 2
    err = capsys.readouterr().err
    assert "<override model.dimm=576>" in err and "did you mean 'dim'?" in err
    # a section-level check that an override broke points at the override, not the file's line
    assert main(["show", str(ROOT / "specs/baseline.yaml"), "model.heads=7"]) == 2
    assert capsys.readouterr().err.startswith("error: <override model.heads=7>: ")


def test_overrides_before_or_after_options(capsys):
    assert main(["show", str(ROOT / "specs/tiny.yaml"), "--json", "model.dim=128"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["show", str(ROOT / "specs/tiny.yaml"), "model.dim=128", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == a


def test_show_json_counts_passes_as_the_table_does(capsys):
    assert main(["show", str(ROOT / "specs/tiny.yaml"), "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert [(l["pass"], l["passes"]) for l in layers] == [(1, 1), (1, 2), (1, 2), (2, 2), (2, 2), (1, 1)]
    assert main(["show", str(ROOT / "specs/tiny.yaml")]) == 0
    out = capsys.readouterr().out
    assert "1/2" in out and "2/2" in out and "0/2" not in out


@pytest.mark.slow
def test_piped_tables_are_plain_whole_columns():
    r = _run("variants", "examples/sweep_loops.yaml", "--top", "12")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert not any("…" in l or l != l.rstrip() or "┃" in l or "\x1b" in l for l in lines)
    rows = [l.split() for l in lines if "loop" in l]
    assert len(rows) == 12 and all(len(r) == len(rows[0]) for r in rows)
    assert rows[0][0] == "1=" and "ties by total_bytes" in r.stdout   # the tie is shown, and what breaks it
    r = _run("show", "specs/loop45_sp8192.yaml")
    assert r.stdout.splitlines()[0] == "loop45_sp8192  order 0..3,(4,5)x3,6..10"


def test_build_prints_a_summary_not_a_repr(capsys):
    assert main(["build", str(ROOT / "specs/tiny.yaml")]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 15 and "parameters (equal to the Plan)" in out and "Linear(" not in out
    assert main(["build", str(ROOT / "specs/tiny.yaml"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["params"] == s["plan_params"] == recurc.make_plan(ROOT / "specs/tiny.yaml").unique_params


# ---------------------------------------------------------------- train: help and preflight
def test_train_help_is_complete_without_torch():
    code = ("import sys, contextlib, io; from recurc.cli import main\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    try: main(['train', '--help'])\n"
            "    except SystemExit: pass\n"
            "assert 'torch' not in sys.modules\n"
            "print(buf.getvalue())")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for opt in ("--gpus", "--data", "--val", "--tokenizer", "--output", "--steps", "--resume", "--compile",
                "--export", "--progress", "--device", "key.path=value"):
        assert opt in r.stdout, opt
    assert "runtime.train -h" not in r.stdout


def test_runtime_train_takes_the_same_options():
    from runtime.train import parse_args
    for spelling in ("-o", "--output", "--out"):
        args = parse_args(["specs/tiny.yaml", spelling, "x", "--steps", "3", "model.dim=64"])
        assert args.out == "x" and args.steps == 3 and args.overrides == ["model.dim=64"]


@pytest.mark.parametrize("extra,message", [
    (["--gpus", "8"], "error: <command line>: 8 GPUs requested, 0 present"),
    (["--data", "nowhere/fineweb_train_*.bin", "--tokenizer", "x.model"],
     "error: <command line>: --data nowhere/fineweb_train_*.bin: no training shards match"),
    (["--tokenizer", "missing.model"], "error: <command line>: --tokenizer missing.model: no such file"),
    (["--gpus", "0"], "error: <command line>: --gpus takes a positive number of processes, got 0"),
    (["model.dimm=3"], "error: <override model.dimm=3>: model.dimm: unknown field"),
])
def test_train_preflight_is_one_error_line(tmp_path, extra, message):
    import torch
    if "--gpus" in extra and torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    r = _run("train", str(ROOT / "specs/tiny.yaml"), "-o", str(tmp_path / "run"), *extra, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines[0] == message and all(l.startswith("hint: ") for l in lines[1:]) and len(lines) <= 2, r.stderr
    assert r.stdout == "" and not (tmp_path / "data").exists()


def test_train_preflight_needs_a_writable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = _run("train", str(ROOT / "specs/tiny.yaml"), "-o", str(blocker / "run"), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: <command line>: output folder {blocker / 'run'} "
                                                      "is not writable")


def test_data_demo_options_are_documented():
    p = _subparsers()["data"]
    for a in p._actions:
        if a.dest != "help":
            assert a.help, a.dest


# ---------------------------------------------------------------- render
def test_render_refuses_an_output_it_cannot_write(tmp_path, capsys):
    spec = str(ROOT / "specs/tiny.yaml")
    assert main(["render", spec, "-o", str(tmp_path / "x.jpg")]) == 2
    assert "cannot tell the format of" in capsys.readouterr().err
    assert main(["render", spec, "-f", "dot", "-o", str(tmp_path / "x.png")]) == 2
    assert "does not match the output" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- layout and the Python API
def test_recurc_imports_runtime_only_from_the_cli_layer():
    for path in (ROOT / "recurc").rglob("*.py"):
        if path.name.endswith("_cli.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not any(n == "runtime" or n.startswith("runtime.") for n in names), path


@pytest.mark.slow
def test_python_api_takes_paths_specs_and_plans():
    code = ("import recurc\n"
            "p = recurc.make_plan('specs/baseline.yaml')\n"
            "s = recurc.load_spec('specs/baseline.yaml')\n"
            "assert recurc.diff('specs/baseline.yaml', s).equal\n"      # loads the estimate module too
            "assert recurc.estimate('specs/baseline.yaml').total_bytes == recurc.estimate(s).total_bytes "
            "== recurc.estimate(p).total_bytes\n"
            "import recurc.estimate\n"
            "assert callable(recurc.estimate) and callable(recurc.diff)\n"
            "assert recurc.build(p, device='meta').plan is p\n"
            "assert callable(recurc.build) and callable(recurc.variants)\n"
            "assert {'load_spec', 'make_plan', 'build', 'estimate', 'diff', 'variants', 'Plan', 'Spec'} <= set(dir(recurc))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- training output
def test_training_log_lines_are_json_when_stdout_is_not_a_terminal(tmp_path):
    import io

    from runtime.log import RunLogger, read_json_log
    human, piped = io.StringIO(), io.StringIO()
    for stream, as_json in ((human, False), (piped, True)):
        log = RunLogger(tmp_path / f"{as_json}.jsonl", stream=stream, stdout_json=as_json)
        log.event("step", step=3, steps=10, loss=4.5, tok_s=1234.0)
        log.close()
    assert human.getvalue().startswith("step 3/10 loss 4.5000")
    rec = json.loads(piped.getvalue())
    assert rec == read_json_log(tmp_path / "True.jsonl")[0] and rec["loss"] == 4.5 and rec["event"] == "step"


def test_eta_counts_down_to_the_steps_or_the_wall_clock_cap():
    from runtime.progress import eta_seconds
    assert eta_seconds(0, 100, 0.0, None) is None
    assert eta_seconds(10, 100, 5.0, None) == pytest.approx(45.0)        # 90 steps at 0.5 s
    assert eta_seconds(10, 100, 5.0, 20.0) == pytest.approx(15.0)        # the cap comes first
    assert eta_seconds(10, 100, 25.0, 20.0) == 0.0
