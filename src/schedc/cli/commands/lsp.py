"""`schedc lsp`: the language server for editors, speaking LSP over stdin/stdout.

Needs the `lsp` extra (`pip install 'schedc[lsp]'`, which brings pygls).
Editors start it themselves; see docs/editors.md.
"""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    # Clients (vscode-languageclient among them) may pass --stdio; stdio is the only transport.
    parser.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default and only transport)")


def run(args) -> int:
    try:
        from schedc.tooling.lsp import serve
    except ImportError as exc:
        print(f"schedc lsp: the language server needs pygls ({exc}); install it with `pip install 'schedc[lsp]'`", file=sys.stderr)
        return 2
    return serve()
