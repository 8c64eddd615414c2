"""Benchmark the language server's edit-to-diagnostics time: a `didChange` until its diagnostics arrive.

    .venv/bin/python bench/bench_lsp.py [--edits 40] [--baseline OTHER/src]

A real `python -m schedc lsp` process is driven over stdio (plain JSON-RPC framing, no client
library in between). It opens each document and waits until its diagnostics are final (for a
file that names a model: after the model has loaded and been checked, so later edits find it
cached), then sends `--edits` one-character edits to each (a digit of a number toggled, as
typing does) one at a time, each with a new version, and times each from sending the
`didChange` to receiving the `publishDiagnostics` of that version. Reported: the median and
the 10th/90th percentiles in milliseconds, and the server process's CPU time (all threads,
from /proc, so Linux only) per edit, which other load on the machine stretches less.

Documents: examples/spectral_line.sched with its `model` directive (the model is bound: the
server checks it against the model's parameters on every edit), the same file with the
directive removed (the model-free checks only), and both with `--long` phases appended (each
with a schedule, free/fix/init and a stop rule) to show how the work grows with the file.

`--baseline DIR` (repeatable) also runs a server whose `schedc` package is imported from DIR
(e.g. the `src` folder of a worktree of an older commit: `git worktree add --detach /tmp/old
COMMIT`); every edit goes to each server in turn, so that they are measured side by side under
the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "spectral_line.sched"
EDITED = "let base = 0.05"  # the line whose last digit the edits toggle (5 <-> 6)


class Server:
    """A `schedc lsp` subprocess spoken to in LSP's Content-Length framed JSON-RPC."""

    def __init__(self, src: Path | None):
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "schedc", "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT
        )
        self.next_id = 0
        self.model_loaded = False  # the server caches the model: only the first open waits for it

    def send(self, method: str, params: dict, request: bool = False) -> int | None:
        message = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            message["id"] = self.next_id
        body = json.dumps(message).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()
        return message.get("id")

    def receive(self) -> dict:
        length = None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the server exited")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return json.loads(self.proc.stdout.read(length))

    def wait_for(self, predicate) -> dict:
        while True:
            message = self.receive()
            if predicate(message):
                return message

    def start(self) -> None:
        # modelChecks: the client's consent to load the model a file names (older servers ignore it)
        params = {"processId": os.getpid(), "rootUri": ROOT.as_uri(), "capabilities": {}, "initializationOptions": {"modelChecks": True}}
        request = self.send("initialize", params, request=True)
        self.wait_for(lambda m: m.get("id") == request)
        self.send("initialized", {})

    def stop(self) -> None:
        request = self.send("shutdown", None, request=True)
        self.wait_for(lambda m: m.get("id") == request)
        self.send("exit", None)
        self.proc.wait(timeout=30)

    def diagnostics_of(self, uri: str, version: int) -> list:
        """Wait for the published diagnostics of this version of the document (the last of them when
        the server publishes twice: before and after the model's checks)."""
        message = self.wait_for(lambda m: m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri and m["params"].get("version") == version)
        return message["params"]["diagnostics"]


def cpu_seconds(pid: int) -> float:
    """CPU time a process has run so far, its live threads together, in nanosecond resolution
    (Linux: the first field of /proc/PID/task/TID/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            continue
    return total / 1e9


def open_document(server: Server, uri: str, text: str, with_model: bool) -> None:
    """Open `text` and wait until its diagnostics are final."""
    server.send("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "sched", "version": 1, "text": text}})
    server.diagnostics_of(uri, 1)
    if with_model and not server.model_loaded:  # published twice: at once, then with the model's checks
        server.diagnostics_of(uri, 1)
        server.model_loaded = True


def timed_edit(server: Server, uri: str, text: str, version: int) -> tuple[float, float]:
    """One keystroke (the last digit of EDITED toggled) until its diagnostics: (wall seconds, server CPU seconds)."""
    line = text[: text.index(EDITED)].count("\n")
    column = len(EDITED) - 1
    change = {"range": {"start": {"line": line, "character": column}, "end": {"line": line, "character": column + 1}}, "text": "56"[version % 2]}
    cpu, began = cpu_seconds(server.proc.pid), time.perf_counter()
    server.send("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": [change]})
    server.diagnostics_of(uri, version)
    return time.perf_counter() - began, cpu_seconds(server.proc.pid) - cpu


# appended to make a long file: each phase frees, fixes, initialises and has a schedule
EXTRA_PHASE = """
phase 100 lr warmup_cosine(0 -> base -> 1e-5, warmup = 10%) <
  free gp.**, line.*;
  fix line.center;
  init line.amplitude ~ normal(1, 0.5);
  stop when loss_change < 1e-6 over 50 after 50;
>
"""


def documents(long_phases: int) -> list[tuple[str, str, bool]]:
    text = EXAMPLE.read_text()
    without = "\n".join(line for line in text.split("\n") if not line.startswith("model "))
    long = text + EXTRA_PHASE * long_phases
    return [
        ("spectral_line.sched, model bound", text, True),
        ("spectral_line.sched, no model directive", without, False),
        (f"+{long_phases} phases, model bound", long, True),
        (f"+{long_phases} phases, no model directive", "\n".join(line for line in long.split("\n") if not line.startswith("model ")), False),
    ]


def _uri(k: int) -> str:
    return (EXAMPLE.parent / f"bench_{k}.sched").as_uri()  # beside the model file it names


def _label(src: Path) -> str:
    """A baseline's name in the table: the commit its checkout is at, else its folder."""
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return head.stdout.strip() if head.returncode == 0 else src.resolve().parent.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--long", type=int, default=200, help="phases appended for the long documents")
    parser.add_argument("--baseline", type=Path, action="append", default=[], metavar="SRC", help="the src folder of another checkout, measured side by side (may be repeated)")
    args = parser.parse_args(argv)
    builds = [("this checkout", None)] + [(_label(src), src.resolve()) for src in args.baseline]
    servers = {label: Server(src) for label, src in builds}
    for server in servers.values():
        server.start()
    docs = documents(args.long)
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    try:
        for k, (_, text, with_model) in enumerate(docs):
            for server in servers.values():
                open_document(server, _uri(k), text, with_model)
        # every edit goes to each build in turn (the order rotating), so that all see the same load
        for version in range(2, args.edits + 2):
            for k, (name, text, _) in enumerate(docs):
                order = list(servers.items())
                for label, server in order[version % len(order) :] + order[: version % len(order)]:
                    seconds, used = timed_edit(server, _uri(k), text, version)
                    wall.setdefault((name, label), []).append(seconds * 1000)
                    cpu.setdefault((name, label), []).append(used * 1000)
    finally:
        for server in servers.values():
            server.stop()
    print(f"edit -> diagnostics, {args.edits} edits each, milliseconds: wall median, p10, p90; server CPU per edit, median")
    print(f"{'document':42} {'build':14} {'median':>8} {'p10':>8} {'p90':>8} {'CPU':>8}")
    for key, times in wall.items():
        decile = statistics.quantiles(times, n=10)
        print(f"{key[0]:42} {key[1]:14} {statistics.median(times):8.1f} {decile[0]:8.1f} {decile[-1]:8.1f} {statistics.median(cpu[key]):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
