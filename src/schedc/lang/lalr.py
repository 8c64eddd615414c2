"""The grammar's LALR tables, read out of the parser lark builds, run without importing lark.

lark is imported only to build a parser from `grammar/sched.lark` (the one source of the syntax)
and for its error reports. Its runtime modules alone import `typing`, `logging` and
`dataclasses` (with `inspect`, `ast`, `dis`, `tokenize`): ~100 M instructions, a third of a fresh
`schedc check` of a typical file (docs/performance.md, "Lint start"). `Tables.read` takes what a
parse uses from the parser lark built (its parse table, each rule's callback as lark composed it,
each parser state's lexer: its terminals in lark's order, keyword retyping, ignored terminals) as
plain data, kept between processes with `marshal`; `Tables.parse` runs them as lark's LALR
parser and contextual lexer do (lark 1.2-1.3: `ParserState.feed_token`, `BasicLexer.next_token`,
`ChildFilterLALR`, `ExpandSingleChild`, `UnlessCallback`, `LineCounter`). Only a text lark would
parse without error is parsed here: at anything else `Rejected` is raised, and the caller parses
with lark itself for its diagnostics and recovery (schedc.lang.syntax). `tests/test_lalr.py`
holds it to lark's parse of every example and test file, and of broken texts.
"""

from __future__ import annotations

import marshal
import re

# Tables written by another layout are read as none (the caller builds them again).
FORMAT = 1
# A `Scan` compiles its terminals' alternation once it has lexed this many tokens.
HOT = 64


class Rejected(Exception):
    """The text is not one lark parses without error (a token or character not expected)."""


class Token(str):
    """A token as lark's lexer makes one (its text, type and position), for the same reducers."""

    __slots__ = ("type", "start_pos", "line", "column", "end_line", "end_column", "end_pos")


class Scan:
    """Terminals' patterns matched in lark's order, as lark's scanner matches their alternation (the
    first that matches is the token): each pattern tried alone until `HOT` tokens were lexed, then
    the alternation, compiled. lark compiles one alternation per parser state met: 31 for a
    typical file, ~10 ms of every `schedc check` of it (docs/performance.md); a pattern alone is
    compiled once per process (`re` keeps it) and shared by every state."""

    def __init__(self, patterns: list, flags: int) -> None:
        self.patterns, self.flags = patterns, flags  # [(regexp, terminal name)]
        self.tries: list | None = None  # [(match, name)], made on first use
        self.compiled = None  # the alternation's match, once hot
        self.left = HOT

    def match(self, text: str, pos: int, end: int):
        """(value, terminal name) of the token at `pos` (before `end`), or None."""
        if self.compiled is not None:
            found = self.compiled(text, pos, end)
            return (found.group(0), found.lastgroup) if found else None
        if self.tries is None:
            self.tries = [(re.compile(regexp, self.flags).match, name) for regexp, name in self.patterns]
        self.left -= 1
        if self.left <= 0:  # (not `== 0`: threads of the language server may count past it together)
            self.compiled = re.compile("|".join(f"(?P<{name}>{regexp})" for regexp, name in self.patterns), self.flags).match
        for match, name in self.tries:
            found = match(text, pos, end)
            if found:
                return found.group(0), name
        return None


class _Lexer(Scan):
    """One parser state's lexer: a `Scan` of its terminals; which of them are ignored; which keyword
    terminals a token of a terminal is retyped to when its text is wholly one of them (lark's
    `UnlessCallback`)."""

    def __init__(self, patterns: list, flags: int, unless: dict, ignored: list) -> None:
        super().__init__(patterns, flags)
        self.unless, self.ignored = unless, frozenset(ignored)

    def retype(self, value: str, type_: str) -> str:
        for regexp, keyword in self.unless[type_]:
            if re.fullmatch(regexp, value, self.flags):
                return keyword
        return type_


class Tables:
    """A parser's tables as plain data (`read` from lark's, `dump`/`load` by `marshal`), run by `parse`."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.start, self.end = data["start"], data["end"]
        self.actions = data["actions"]  # per state: {symbol: state shifted to, or -1 - rule reduced}
        self.rules = data["rules"]  # (origin, length, kept children, Nones appended, single child kept, reducer)
        # a `?rule` reduced from one child is that child (`_reduce`): only the state changes. More
        # than half of a file's reductions are these (an expression's precedence levels).
        self.passes = [length == 1 and single and include == ((0, False, 0),) and not append_none for _, length, include, append_none, single, _ in self.rules]
        lexers = [_Lexer(*lexer) for lexer in data["lexers"]]
        self.lexer_of = [lexers[i] for i in data["lexer_of"]]

    @classmethod
    def read(cls, lalr, lexer, reducers: dict, on_token: dict) -> Tables | None:
        """The tables of lark's LALR parser `lalr` (its `_Parser`, with the callbacks lark made from
        `reducers`, {rule name: callable}) and its contextual `lexer` (with `on_token`, lark's
        `lexer_callbacks`); None when they hold something `parse` does not run as lark would. (lark
        objects made otherwise than by lark 1.2-1.3, an attribute or class missing, may raise
        ImportError, AttributeError, TypeError...: the caller reads them as None.)"""
        from lark.parse_tree_builder import ChildFilter, ExpandSingleChild
        from lark.parsers.lalr_analysis import Shift

        table = lalr.parse_table
        state_ids = {state: i for i, state in enumerate(table.states)}
        rules, rule_ids, names = [], {}, {id(f): name for name, f in reducers.items()}
        for rule, callback in lalr.callbacks.items():
            include, append_none, single = [(i, False, 0) for i in range(len(rule.expansion))], 0, False
            if isinstance(callback, ChildFilter):
                include = [(*entry, 0) if len(entry) == 2 else tuple(entry) for entry in callback.to_include]  # (NoPlaceholders: 2-tuples)
                if any(len(entry) != 3 for entry in include):  # entries of a shape `_reduce` does not know
                    return None
                append_none, callback = getattr(callback, "append_none", 0), callback.node_builder
            if isinstance(callback, ExpandSingleChild):
                single, callback = True, callback.node_builder
            reducer = names.get(id(callback))
            always_one = single and len(include) == 1 and include[0][1:] == (False, 0) and not append_none
            if reducer is None and not rule.origin.name.startswith("_") and not always_one:  # a Tree lark would keep
                return None
            rule_ids[rule] = len(rules)
            rules.append((str(rule.origin.name), len(rule.expansion), tuple(map(tuple, include)), append_none, single, reducer))
        actions = [  # (`str`: a grammar lark has just read names its symbols by its `Token`s, which marshal does not write)
            {str(symbol): state_ids[arg] if action is Shift else -1 - rule_ids[arg] for symbol, (action, arg) in table.states[state].items()}
            for state in table.states
        ]
        lexers, lexer_ids = [], {}
        for state in table.states:
            state_lexer = lexer.lexers[state]
            if id(state_lexer) not in lexer_ids:
                made = _lexer_data(state_lexer, on_token)
                if made is None:
                    return None
                lexer_ids[id(state_lexer)] = len(lexers)
                lexers.append(made)
        lexer_of = [lexer_ids[id(lexer.lexers[state])] for state in table.states]
        data = {"format": FORMAT, "start": state_ids[table.start_states["start"]], "end": state_ids[table.end_states["start"]]}
        return cls({**data, "actions": actions, "rules": rules, "lexers": lexers, "lexer_of": lexer_of})

    def dump(self, file) -> None:
        marshal.dump(self.data, file)

    @classmethod
    def load(cls, file) -> Tables | None:
        data = marshal.loads(file.read())  # (`marshal.load` reads a file object a few bytes a call)
        return cls(data) if isinstance(data, dict) and data.get("format") == FORMAT else None

    def parse(self, text: str, reducers: dict, on_token: dict):
        """The value of the start rule for `text`, each rule reduced by `reducers[name](children)` as
        lark's callbacks do (a rule without one, an inlined `_rule`, is spliced into its parent);
        each token of a type in `on_token` given to it as it is lexed. Raises `Rejected`."""
        actions, rules, lexer_of, end_state = self.actions, self.rules, self.lexer_of, self.end
        callbacks, passes = [reducers.get(rule[5]) for rule in rules], self.passes
        states, values = [self.start], []
        pos, line, line_start, size = 0, 1, 0, len(text)
        while True:
            if pos < size:  # the next token, lexed in the parser's state (lark's contextual lexer)
                lexer = lexer_of[states[-1]]
                found = lexer.match(text, pos, size)
                if found is None:
                    raise Rejected(pos)
                value, type_ = found
                token = Token(value)
                token.type, token.start_pos, token.line, token.column = type_, pos, line, pos - line_start + 1
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = pos + value.rindex("\n") + 1
                pos += len(value)
                token.end_line, token.end_column, token.end_pos = line, pos - line_start + 1, pos
                if type_ in lexer.unless:  # (a terminal retyped has no callback of its own: `_lexer_data`)
                    token.type = lexer.retype(value, type_)
                elif type_ in on_token:
                    token = on_token[type_](token)
                if type_ in lexer.ignored:  # (by the type matched, as lark decides)
                    continue
                type_ = token.type
            else:
                type_, token = "$END", None
            while True:  # reduce as long as the table says, then shift (lark's `feed_token`)
                action = actions[states[-1]].get(type_)
                if action is None:
                    raise Rejected(token.start_pos if token is not None else size)
                if action >= 0:
                    if token is None:
                        raise Rejected(size)
                    states.append(action)
                    values.append(token)
                    break
                origin, length, include, append_none, single, _ = rules[-1 - action]
                if passes[-1 - action]:
                    states[-1] = actions[states[-2]][origin]
                    value = values[-1]
                else:
                    children = values[-length:] if length else []
                    if length:
                        del states[-length:]
                        del values[-length:]
                    value = _reduce(children, include, append_none, single, callbacks[-1 - action])
                    states.append(actions[states[-1]][origin])
                    values.append(value)
                if token is None and states[-1] == end_state:
                    return value


def _reduce(children: list, include: tuple, append_none: int, single: bool, callback):
    """A rule's value from its children as lark's callbacks make it: the children kept (Nones for
    absent optional parts, `_rules` spliced: `ChildFilterLALR`), one child returned as itself for a
    `?rule` (`ExpandSingleChild`), else the rule's reducer, or the children themselves to splice."""
    kept = []
    for i, splice, nones in include:
        if nones:
            kept += [None] * nones
        if splice:
            kept += children[i]
        else:
            kept.append(children[i])
    if append_none:
        kept += [None] * append_none
    if single and len(kept) == 1:
        return kept[0]
    return kept if callback is None else callback(kept)


def _lexer_data(lexer, called: dict) -> tuple | None:
    """A state's lexer as `_Lexer`'s arguments (lark's terminals, in the order its scanner tries
    them, after keyword terminals moved into the terminal that matches them); None when it has a
    callback other than keyword retyping or one of `called`'s."""
    from lark.lexer import UnlessCallback

    terminals = lexer.scanner.terminals  # (building the scanner makes `lexer.callback`)
    unless = {}
    for type_, callback in lexer.callback.items():
        if isinstance(callback, UnlessCallback):
            unless[str(type_)] = [(str(t.pattern.to_regexp()), str(t.name)) for t in callback.scanner.terminals]
        elif called.get(type_) is not callback:
            return None
    return [(str(t.pattern.to_regexp()), str(t.name)) for t in terminals], int(lexer.g_regex_flags), unless, sorted(map(str, lexer.ignore_types))
