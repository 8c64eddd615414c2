"""`schedc check`'s result cache: a hit gives what a fresh check gives, without parsing; any
change of the file's bytes misses; --no-cache and SCHEDC_NO_CACHE turn it off."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from schedc.cli import main, result_cache

BAD = "phase 10 lr 0.1 < free a; fix a >\nphase 0 lr adamm < frees b >\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv("SCHEDC_NO_CACHE", raising=False)
    monkeypatch.setenv("SCHEDC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _check(capsys, *argv) -> tuple[int, str]:
    code = main(["check", *argv])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["text", "concise", "json", "github"])
def test_hit_prints_what_a_fresh_check_prints(tmp_path, cache, capsys, fmt):
    f = tmp_path / "f.sched"
    f.write_text(BAD)
    fresh = _check(capsys, "--no-cache", "--format", fmt, str(f))
    assert not cache.exists()  # --no-cache writes nothing
    first = _check(capsys, "--format", fmt, str(f))
    assert len(list(cache.iterdir())) == 1
    second = _check(capsys, "--format", fmt, str(f))
    assert fresh == first == second
    assert fresh[0] == 1 and "E0" in fresh[1]


def test_hit_skips_the_parser(tmp_path, cache, monkeypatch, capsys):
    f = tmp_path / "f.sched"
    f.write_text(BAD)
    _check(capsys, str(f))
    import schedc.pipeline

    monkeypatch.setattr(schedc.pipeline, "analyse", lambda *a, **k: pytest.fail("analysed despite a cached result"))
    assert _check(capsys, "--format", "concise", str(f))[0] == 1


def test_changed_bytes_miss(tmp_path, cache, capsys):
    f = tmp_path / "f.sched"
    f.write_text(BAD)
    _check(capsys, str(f))
    f.write_text("phase 10 lr 0.1 < free a >\n")
    code, out = _check(capsys, "--format", "json", str(f))
    assert code == 0 and json.loads(out.splitlines()[0]) == []
    assert len(list(cache.iterdir())) == 1  # one entry per path, replaced


def test_key_covers_bytes_and_version(monkeypatch):
    base = result_cache.key(b"phase 1 lr 0.1 < free a >")
    assert base != result_cache.key(b"phase 1 lr 0.1 < free a > ")
    monkeypatch.setattr(result_cache, "__version__", "0.0.0-other")
    assert base != result_cache.key(b"phase 1 lr 0.1 < free a >")


def test_corrupt_entry_is_a_miss(tmp_path, cache, capsys):
    f = tmp_path / "f.sched"
    f.write_text(BAD)
    expected = _check(capsys, str(f))
    (entry,) = cache.iterdir()
    entry.write_text("{not json")
    assert _check(capsys, str(f)) == expected


def test_environment_turns_it_off(tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setenv("SCHEDC_NO_CACHE", "1")
    f = tmp_path / "f.sched"
    f.write_text(BAD)
    _check(capsys, str(f))
    assert not cache.exists()


def test_standard_input_is_not_cached(tmp_path, cache):
    proc = subprocess.run([sys.executable, "-m", "schedc", "check", "-"], input=BAD, capture_output=True, text=True)
    assert proc.returncode == 1 and "E0" in proc.stdout
    assert not cache.exists()


def test_key_covers_the_grammar_and_the_front_end():
    """An edited grammar, parser or check (size or modification time) changes every key."""
    covered = {path for path, _, _ in result_cache._front_end_fingerprint()}
    assert {"lang/grammar/sched.lark", "lang/syntax.py", "lang/nodes.py", "check/checker.py", "pipeline.py"} <= covered


def test_a_clean_hit_imports_almost_nothing(tmp_path, cache):
    """Answering an unchanged clean file imports neither the parser, lark, the checks nor even the
    diagnostics module (and so not dataclasses): there is nothing to render."""
    f = tmp_path / "f.sched"
    f.write_text("phase 10 lr 0.1 < free a >\n")
    env = {**os.environ, "SCHEDC_CACHE_DIR": str(cache)}
    command = [sys.executable, "-X", "importtime", "-m", "schedc", "check", str(f)]
    subprocess.run(command, capture_output=True, env=env, check=True)  # fills the cache
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0 and proc.stdout == "All checks passed!\n"
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", proc.stderr, re.MULTILINE))
    assert "schedc.cli.result_cache" in imported  # the measurement works
    assert not imported & {"lark", "schedc.lang.nodes", "schedc.lang.syntax", "schedc.check", "schedc.lang.diagnostics", "dataclasses", "pathlib", "hashlib", "shutil"}


def test_the_keys_digest_is_hashlibs_sha256():
    """schedc.lang.digest (CPython's own SHA-256, without importing hashlib) hashes as hashlib does."""
    import hashlib

    from schedc.lang.digest import sha256

    for data in (b"", b"phase 10 lr 0.1 < free a >\n", bytes(range(256)) * 300):
        assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
        incremental = sha256(data[:7])
        incremental.update(data[7:])
        assert incremental.hexdigest() == hashlib.sha256(data).hexdigest()
