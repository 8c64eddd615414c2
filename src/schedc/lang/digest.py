"""SHA-256 for the caches' keys (the kept parsers', `schedc check`'s results), without `hashlib`.

`hashlib` loads OpenSSL's libcrypto and tries a constructor for each of its algorithms when it is
imported: ~11 M instructions, ~3% of a fresh `schedc check` of a typical file and ~7% of an answer
from the result cache (docs/performance.md), for one hash of a few kilobytes. CPython's own
SHA-256 module gives the same digests; `hashlib` is the fallback where there is none.
"""

from __future__ import annotations

try:
    from _sha256 import sha256  # CPython up to 3.11
except ImportError:
    try:
        from _sha2 import sha256  # CPython 3.12 and later
    except ImportError:
        from hashlib import sha256

__all__ = ["sha256"]
