"""lark's contextual lexer, each parser state's scanner a `schedc.lang.lalr.Scan` (no alternation
of its terminals compiled: only those a token at the next character may be are tried), for the
parsers lark builds from the grammar (schedc.lang.syntax, through lark's `_plugins` option).
Imported only where lark is: a module of its own, so that the syntax module imports no lark."""

from __future__ import annotations

from lark.lexer import BasicLexer, CallChain, ContextualLexer, _create_unless

from schedc.lang.lalr import Scan, patterns


class LazyScanner(Scan):
    """lark's scanner of one parser state: a `Scan` of the state's terminals (lark's `Scanner` has
    the same `terminals` and `allowed_types`, and `match(TextSlice, pos)`)."""

    def __init__(self, terminals, flags: int, re_module, use_bytes: bool) -> None:
        assert not use_bytes and re_module.__name__ == "re", "the parser lexes str with `re`"
        super().__init__(patterns(terminals, flags), flags)
        self.terminals = terminals
        self.allowed_types = {t.name for t in terminals}

    def match(self, text, pos: int):  # (lark's: `text` a TextSlice)
        return super().match(text.text, pos, text.end)


class LazyBasicLexer(BasicLexer):
    """lark's lexer of one parser state, with a `LazyScanner`."""

    def _build_scanner(self):
        # lark's BasicLexer._build_scanner (lark 1.2-1.3), with the scanner made lazy
        terminals, self.callback = _create_unless(self.terminals, self.g_regex_flags, self.re, self.use_bytes)
        for type_, f in self.user_callbacks.items():
            if type_ in self.callback:
                self.callback[type_] = CallChain(self.callback[type_], f, lambda t, type_=type_: t.type == type_)
            else:
                self.callback[type_] = f
        return LazyScanner(terminals, self.g_regex_flags, self.re, self.use_bytes)


class LazyContextualLexer(ContextualLexer):
    BasicLexer = LazyBasicLexer
