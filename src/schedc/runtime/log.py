"""Logging a run to a folder: `schedc run --log DIR`, or `Program.run(..., logger=RunLog(DIR))`.

After each phase, its records are appended to

* `log.jsonl`: one JSON object per line: `{"kind": "step", "step", "phase", "loss", <hyperparameters>}`
  per step, `{"kind": "aux", "step", "phase", <aux metrics>}` per chunk (means over its steps),
  `{"kind": "eval", "step", "phase", <metrics>}` per evaluation, and `{"kind": "phase", ...}` at
  its end (steps run, stop reason, times);
* `steps.csv`: step, phase, loss and every hyperparameter (a column each), one row per step;
* with tensorboardX installed (`pip install 'schedc[log]'`), TensorBoard event files: `loss`,
  `hyper/NAME`, `aux/NAME`, `val/NAME` against the run's step.

Steps are the run's (phases concatenated), as in `Result.loss_history`. Written per phase, so a
run that ends early keeps the log of every phase it completed.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path


def json_number(value) -> float | None:
    """`value` as a JSON number: None (null) when it is not finite, since JSON has no NaN or Infinity
    (Python's `json` writes them, and strict readers, jq and JavaScript's among them, refuse the file)."""
    value = float(value)
    return value if math.isfinite(value) else None


class RunLog:
    """Appends each phase of a run to `folder` (created; earlier logs there are replaced)."""

    def __init__(self, folder, tensorboard: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in ("log.jsonl", "steps.csv"):
            (self.folder / name).unlink(missing_ok=True)
        self.offset = 0  # the run step at which the next phase starts
        self.columns = ["step", "phase", "loss"]  # steps.csv's, once its header is written
        self.written = False
        self.board = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                pass
            else:
                self.board = SummaryWriter(str(self.folder))

    def phase(self, result) -> None:
        """Append one `PhaseResult`."""
        label, start = result.display, self.offset
        records = []
        for i, loss in enumerate(result.losses):
            records.append({"kind": "step", "step": start + i, "phase": label, "loss": json_number(loss)} | {k: json_number(v[i]) for k, v in result.hyperparams.items()})
        for j, step in enumerate(result.aux_steps):
            records.append({"kind": "aux", "step": start + int(step), "phase": label} | {k: json_number(v[j]) for k, v in result.aux.items()})
        for j, step in enumerate(result.eval_steps):
            records.append({"kind": "eval", "step": start + int(step), "phase": label} | {k: json_number(v[j]) for k, v in result.metrics.items()})
        records.append(
            {"kind": "phase", "step": start + result.steps_run, "phase": label, "steps_run": result.steps_run, "stop_reason": result.stop_reason, "wall_time": result.wall_time, "compile_time": result.compile_time}
        )
        with open(self.folder / "log.jsonl", "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        self._csv([r for r in records if r["kind"] == "step"])
        if self.board is not None:
            self._board(records)
        self.offset += result.steps_run

    def _csv(self, rows: list[dict]) -> None:
        """Append the phase's step rows. A phase that logs a hyperparameter no phase before it did
        (`b1` fed by a schedule from phase 3 on) adds a column: the file is written again
        with it in its header (empty in the rows before)."""
        path = self.folder / "steps.csv"
        added = [k for k in dict.fromkeys(k for row in rows for k in row) if k != "kind" and k not in self.columns]
        if added and self.written:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f)) + rows
            self.written = False
        self.columns += added
        with open(path, "a" if self.written else "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if not self.written:
                writer.writeheader()
            writer.writerows(rows)
        self.written = True

    def _board(self, records: list[dict]) -> None:
        prefix = {"step": "hyper/", "aux": "aux/", "eval": "val/"}
        for r in records:
            if r["kind"] not in prefix:
                continue
            for key, value in r.items():
                if key in ("kind", "step", "phase") or value is None:
                    continue
                tag = "loss" if key == "loss" and r["kind"] == "step" else prefix[r["kind"]] + key
                self.board.add_scalar(tag, value, r["step"])
        self.board.flush()

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
