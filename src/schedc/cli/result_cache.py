"""`schedc check`'s result cache: a file's model-free diagnostics, kept per file and reused
while neither the file's bytes nor schedc change (as ruff keeps its lint results).

An entry is a small JSON file per checked path in the user's private cache folder
(`$SCHEDC_CACHE_DIR`, else `$XDG_CACHE_HOME/schedc/check`, else `~/.cache/schedc/check`),
holding the key it was made under and the diagnostics. The key hashes the file's bytes,
schedc's version, the Python version and the size and modification time of every file of
the front end (schedc.lang, schedc.check, schedc.pipeline and the grammar), so an edited
checkout never answers from a stale entry. Checks against a model (`--model`) and standard
input are never cached. `schedc check --no-cache` or `SCHEDC_NO_CACHE=1` turns it off.

JSON, not pickle: reading a cache entry never runs code. A hit imports only what it must
(json; SHA-256 from schedc.lang.digest, not hashlib): the diagnostics classes only when there are
diagnostics to rebuild, no pathlib; `--no-cache` not even json.
"""

from __future__ import annotations

import os
import sys

from schedc import __version__
from schedc.lang.digest import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from schedc.lang.diagnostics import Diagnostic

# bump when the entry's layout changes
FORMAT = 2


def enabled() -> bool:
    return not os.environ.get("SCHEDC_NO_CACHE")


def folder() -> str:
    explicit = os.environ.get("SCHEDC_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "schedc", "check")


def key(data: bytes) -> str:
    """What an entry must have been made under to be reused for a file of these bytes."""
    digest = sha256(data)
    digest.update(repr((FORMAT, __version__, sys.version_info[:2], _front_end_fingerprint())).encode())
    return digest.hexdigest()


def load(name: str, data: bytes) -> list[Diagnostic] | None:
    """The diagnostics cached for file `name` with these bytes, or None (no entry, a stale or unreadable one)."""
    import json

    try:
        with open(_entry(name), "rb") as file:
            entry = json.loads(file.read())
        if entry.get("key") != key(data):
            return None
        return [_diagnostic(r, name) for r in entry["diagnostics"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(name: str, data: bytes, diagnostics: list[Diagnostic]) -> None:
    """Keep `diagnostics` for file `name` with these bytes (silently nothing when the folder is not writable)."""
    import json

    from schedc.lang.record import as_dict

    path = _entry(name)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        partial = f"{path[:-len('.json')]}.{os.getpid()}.tmp"
        with open(partial, "w") as file:
            file.write(json.dumps({"key": key(data), "diagnostics": [as_dict(d) for d in diagnostics]}))
        os.replace(partial, path)  # a reader sees the old entry or the new one, never half of one
    except OSError:
        pass


def _entry(name: str) -> str:
    """One entry per checked path (so the folder holds as many files as one has checked, not one per edit)."""
    return os.path.join(folder(), sha256(os.path.abspath(name).encode()).hexdigest()[:32] + ".json")


_FINGERPRINT: tuple | None = None


def _front_end_fingerprint() -> tuple:
    """(path, size, mtime) of every file whose change could change a model-free diagnostic."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
        found = []
        for sub in ("lang", "check", "lang/grammar"):
            with os.scandir(os.path.join(package, sub)) as entries:
                found.extend((f"{sub}/{e.name}", e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file() and e.name.endswith((".py", ".lark")))
        pipeline = os.stat(os.path.join(package, "pipeline.py"))
        found.append(("pipeline.py", pipeline.st_size, pipeline.st_mtime_ns))
        _FINGERPRINT = tuple(sorted(found))
    return _FINGERPRINT


def _diagnostic(record: dict, name: str) -> Diagnostic:
    """A diagnostic back from its record (`record.as_dict`); under `name` (the same path,
    perhaps spelled another way)."""
    from schedc.lang.diagnostics import Diagnostic, Label
    from schedc.lang.span import Span

    def under_name(file):
        return name if file is not None and file == record["file"] else file

    labels = tuple(Label(Span(**label["span"]), label["message"], under_name(label["file"])) for label in record["labels"])
    return Diagnostic(**{**record, "span": Span(**record["span"]), "notes": tuple(record["notes"]), "labels": labels, "file": under_name(record["file"])})
