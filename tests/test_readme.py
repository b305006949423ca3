"""The README as a new user runs it: every command of "A first look", as written, in a fresh
folder, with the figures it states; the error example; docs/variants.md's template; CI's commands."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = "`" * 3


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def _blocks(text: str, lang: str = "") -> list[str]:
    return re.findall(rf"{FENCE}{lang}\n(.*?){FENCE}", text, re.S)


def first_look_commands() -> list[str]:
    """The commands of "A first look", comments and comment-only continuation lines dropped."""
    (block,) = _blocks(_section("A first look"), "bash")
    out = []
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        out.append(re.sub(r"\s+#\s.*$", "", line).rstrip())
    return out


def _workdir(tmp_path: Path) -> Path:
    """A fresh folder holding what a clone holds that the commands read: specs and examples."""
    work = tmp_path / "clone"
    work.mkdir()
    for name in ("specs", "examples"):
        shutil.copytree(ROOT / name, work / name)
    return work


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "COLUMNS": "80"}


def test_first_look_commands_are_the_ones_documented():
    cmds = first_look_commands()
    assert len(cmds) == 14 and all(c.startswith("recurc ") for c in cmds)


@pytest.mark.slow
def test_every_first_look_command_runs_as_written(tmp_path):
    work = _workdir(tmp_path)
    results = {}
    for cmd in first_look_commands():
        r = subprocess.run(cmd, shell=True, cwd=work, env=_env(), capture_output=True, text=True)
        want = 1 if cmd.startswith("recurc diff") else 0     # diff: exit 1 when the specs differ
        assert r.returncode == want, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr and "Warning" not in r.stderr, f"{cmd}\n{r.stderr[-2000:]}"
        results[cmd] = r

    def out(prefix: str) -> str:
        return next(r.stdout for c, r in results.items() if c.startswith(prefix))

    # the figures the comments state
    assert re.search(r"^ total +17,059,912 ", out("recurc show specs/baseline.yaml"), re.M)
    assert "21,515,400" in out('recurc show specs/baseline.yaml order=')
    assert json.loads(out("recurc show specs/loop45x2.yaml --json"))["virtual_layers"] == 13
    assert "$defs" in json.loads((work / "out/recurc.schema.json").read_text())
    assert "/ 16,000,000" in out("recurc estimate") and "FLOPs/token" in out("recurc estimate")
    assert (work / "out/abc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "270 of 360 variants pass" in out("recurc variants")
    assert len(list((work / "out/sweep").glob("*.yaml"))) == 10 and (work / "out/sweep/variants.json").is_file()
    assert "parameters (equal to the Plan)" in out("recurc build") and "Linear(" not in out("recurc build")
    assert (work / "data/demo/tokenizer.model").is_file()
    log = [json.loads(l) for l in (work / "out/tiny/log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if r["event"] == "step"]
    export = next(r for r in log if r["event"] == "export")
    assert steps[-1] == 120 and export["post_bpb"] > 0 and export["model_bytes"] > 0
    # piped, training prints one JSON line per event
    assert all(json.loads(l)["event"] for l in out("recurc train").splitlines())
    assert f"{export['model_bytes']:,}" in out("recurc measure")    # the bytes the export wrote, exactly
    assert json.loads((work / "out/mine.json").read_text())
    assert (work / "out/train_gpt.py").stat().st_size > 0
    # nothing is left beside the inputs but out/ and data/
    assert sorted(p.name for p in work.iterdir()) == ["data", "examples", "out", "specs"]


def test_the_error_example_is_the_real_output(tmp_path):
    (example,) = [b for b in _blocks(_section("Specs")) if "$ recurc show bad.yaml" in b]
    lines = example.splitlines()
    cat, show = lines.index("$ cat bad.yaml"), lines.index("$ recurc show bad.yaml")
    work = _workdir(tmp_path)
    (work / "bad.yaml").write_text("\n".join(lines[cat + 1:show]) + "\n")
    r = subprocess.run(["recurc", "show", "bad.yaml"], cwd=work, env=_env(), capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.splitlines() == lines[show + 1:]


def test_docs_variants_template_is_the_example_file():
    docs = (ROOT / "docs/variants.md").read_text(encoding="utf-8")
    template = (ROOT / "examples/sweep_loops.yaml").read_text(encoding="utf-8")
    assert template in _blocks(docs, "yaml")


def test_ci_runs_the_readme_commands():
    (block,) = _blocks(_section("Install and test"), "bash")
    ci = (ROOT / ".ci/run").read_text()
    install, test = block.strip().splitlines()
    pip = install.split("&& ")[-1].replace("pip install", "pip install -q")   # CI installs quietly
    assert pip in ci.splitlines() and test in ci.splitlines()


def test_the_readme_cites_no_file_outside_the_repo():
    assert "FACTS.md" not in README
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)\)", README):
        assert (ROOT / target).exists(), target
