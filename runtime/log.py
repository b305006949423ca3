"""Run logging: one human-readable line and one JSON line per event, rank 0 only.

A line a person reads and a line a script parses carry the same fields:

    step 120/150 loss 4.1230 lr_scale 0.80 tok/s 12,345 elapsed 12.3s
    {"event": "step", "step": 120, "steps": 150, "loss": 4.123, "lr_scale": 0.8, ...}

The JSON file is opened in append mode and flushed after every record, so a run that is
killed leaves every finished record behind and a resumed run continues the same file.
(Named log.py, not logging.py, so it does not shadow the standard library's logging.)
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

# Fields printed by the human line, in order, with their format; others go to JSON only.
_HUMAN_FIELDS: tuple[tuple[str, str], ...] = (
    ("loss", "loss {:.4f}"),
    ("val_loss", "val_loss {:.4f}"),
    ("val_bpb", "val_bpb {:.4f}"),
    ("lr_scale", "lr_scale {:.2f}"),
    ("path", "path {}"),
    ("tok_s", "tok/s {:,.0f}"),
    ("step_ms", "step {:.1f}ms"),
    ("elapsed", "elapsed {:.1f}s"),
)


def format_human(event: str, record: dict[str, Any]) -> str:
    """`step 120/150 loss 4.1230 ...`; other events print `event key value ...`."""
    head = event
    if "step" in record:
        head = f"{event} {record['step']}/{record['steps']}" if "steps" in record else f"{event} {record['step']}"
    parts = [head]
    shown = {"step", "steps"}
    for key, fmt in _HUMAN_FIELDS:
        if record.get(key) is not None:
            parts.append(fmt.format(record[key]))
            shown.add(key)
    if event != "step":  # rare events: show everything else too
        for key, value in record.items():
            if key not in shown and not isinstance(value, (dict, list)):
                parts.append(f"{key} {_short(value)}")
    return " ".join(parts)


def _short(value: Any) -> str:
    """Numbers as a person reads them: 1,234,567 bytes; 1.7447 bpb."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4f}"


def _jsonable(value: Any) -> Any:
    """Floats that JSON cannot hold (nan, inf) become null rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class RunLogger:
    """Writes events on rank 0; on other ranks every call is a no-op."""

    def __init__(self, json_path: str | Path | None = None, *, rank: int = 0, progress: Any = None,
                 stream: TextIO | None = None, stdout_json: bool = False) -> None:
        self.enabled = rank == 0
        # stdout not a terminal (a file, a pipe, a job log): print the JSON record, not the human line
        self.stdout_json = stdout_json
        self.stream = stream or sys.stdout
        self._json: TextIO | None = None
        if self.enabled and json_path is not None:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            self._json = open(json_path, "a", encoding="utf-8")
        # a progress display (runtime/progress.py's RichProgress) handed in by the CLI layer, or None
        self._display = progress if self.enabled else None
        self._progress = None

    # ---- progress display, optional
    def start_progress(self, total: int, completed: int = 0) -> None:
        if self._display is not None:
            self._display.start(total, completed)
            self._progress = self._display

    def advance(self, step: int, info: str = "") -> None:
        if self._progress is not None:
            self._progress.advance(step, info)

    def stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # ---- records
    def event(self, event: str, **record: Any) -> None:
        """Print the human line and append the JSON line."""
        if not self.enabled:
            return
        rec = json.dumps(_jsonable({"event": event, "time": round(time.time(), 3), **record}))
        if self.stdout_json:
            print(rec, file=self.stream, flush=True)
        elif self._progress is not None:
            self._progress.print(format_human(event, record))
        else:
            print(format_human(event, record), file=self.stream, flush=True)
        if self._json is not None:
            self._json.write(rec + "\n")
            self._json.flush()

    def close(self) -> None:
        self.stop_progress()
        if self._json is not None:
            self._json.close()
            self._json = None


def read_json_log(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines log; a torn last line (a killed writer) is skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
