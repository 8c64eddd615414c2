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
from functools import lru_cache

# Tables written by another layout are read as none (the caller builds them again).
FORMAT = 2


class Rejected(Exception):
    """The text is not one lark parses without error (a token or character not expected)."""


class Token(str):
    """A token as lark's lexer makes one (its text, type and position), for the same reducers."""

    __slots__ = ("type", "start_pos", "line", "column", "end_line", "end_column", "end_pos")


class Scan:
    """Terminals' patterns matched in lark's order, as lark's scanner matches their alternation (the
    first that matches is the token), trying only the terminals a token at the text's next
    character can be (`shape`: the ASCII characters each can begin with). lark compiles one
    alternation per parser state met (31 for a typical file, ~10 ms of every `schedc check` of
    it: docs/performance.md). Here no alternation is compiled; a pattern is compiled once per
    process, the first time a token may be one of its terminal's (`re` keeps it for every state),
    and a literal not at all."""

    def __init__(self, patterns: list, flags: int) -> None:
        self.patterns, self.flags = patterns, flags  # [(regexp, terminal name, first characters or None, literal or None)]: `shape`
        self.at: dict = {}  # a character → ((literal, match, name) of each terminal a token there may be), made on first use

    def match(self, text: str, pos: int, end: int):
        """(value, terminal name) of the token at `pos` (before `end`), or None."""
        char = text[pos]
        candidates = self.at.get(char)
        if candidates is None:
            candidates = self.at[char] = self._candidates(char)
        for literal, match, name in candidates:
            if match is None:
                if text.startswith(literal, pos, end):
                    return literal, name
            else:
                found = match(text, pos, end)
                if found:
                    return found.group(0), name
        return None

    def _candidates(self, char: str) -> tuple:
        ascii_ = char < "\x80"  # (`shape` knows the ASCII characters; at any other, every terminal is tried)
        return tuple(
            (literal, None if literal is not None else re.compile(regexp, self.flags).match, name)
            for regexp, name, first, literal in self.patterns
            if not ascii_ or first is None or char in first
        )


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
        # a rule that keeps every child as it is gives `_reduce`'s callback the children themselves
        self.keeps_all = [not single and not append_none and include == tuple((i, False, 0) for i in range(length)) for _, length, include, append_none, single, _ in self.rules]
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
        callbacks, passes, keeps_all = [reducers.get(rule[5]) for rule in rules], self.passes, self.keeps_all
        states, values = [self.start], []
        pos, line, line_start, size = 0, 1, 0, len(text)
        while True:
            if pos < size:  # the next token, lexed in the parser's state (lark's contextual lexer)
                lexer = lexer_of[states[-1]]
                found = lexer.match(text, pos, size)
                if found is None:
                    raise Rejected(pos)
                value, type_ = found
                start, start_line, column = pos, line, pos - line_start + 1
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = pos + value.rindex("\n") + 1
                pos += len(value)
                if type_ in lexer.ignored and type_ not in on_token and type_ not in lexer.unless:
                    continue  # (whitespace: no token made)
                token = Token(value)
                token.type, token.start_pos, token.line, token.column = type_, start, start_line, column
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
                rule = -1 - action
                origin, length, include, append_none, single, _ = rules[rule]
                if passes[rule]:
                    states[-1] = actions[states[-2]][origin]
                    value = values[-1]
                else:
                    children = values[-length:] if length else []
                    if length:
                        del states[-length:]
                        del values[-length:]
                    if keeps_all[rule]:
                        value = children if callbacks[rule] is None else callbacks[rule](children)
                    else:
                        value = _reduce(children, include, append_none, single, callbacks[rule])
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
    flags = int(lexer.g_regex_flags)
    return patterns(terminals, flags), flags, unless, sorted(map(str, lexer.ignore_types))


def patterns(terminals, flags: int) -> list:
    """`Scan`'s patterns of lark's `terminals`, in their order."""
    return [(regexp, str(t.name), *shape(regexp, flags)) for t in terminals for regexp in [str(t.pattern.to_regexp())]]


@lru_cache(maxsize=None)
def shape(regexp: str, flags: int) -> tuple[str | None, str | None]:
    """(the ASCII characters a match of `regexp` can begin with, or None where that is not known;
    the one text it matches when it is a literal, else None), read from its parse by `re`. None is
    always safe (`Scan` then tries the pattern at every character): a kind of pattern not known
    here, case folding, a pattern that can match nothing."""
    try:
        from re import _constants as sre
        from re import _parser

        parsed = _parser.parse(regexp, flags)
        if parsed.state.flags & re.IGNORECASE:
            return None, None
        literal = "".join(chr(code) for _, code in parsed.data) if parsed.data and all(op is sre.LITERAL for op, _ in parsed.data) else None
        first, can_be_empty = _starts(parsed.data, sre)
    except _NotKnown:
        return None, literal
    except (ImportError, AttributeError, TypeError, ValueError, IndexError, re.error):  # (a Python whose `re` is not laid out as 3.11-3.13's)
        return None, None
    return (None if can_be_empty else "".join(sorted(first))), literal


class _NotKnown(Exception):
    """A part of a pattern whose first characters `_starts` does not read."""


_ASCII = [chr(code) for code in range(128)]
_CATEGORIES = {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W", "CATEGORY_SPACE": r"\s", "CATEGORY_NOT_SPACE": r"\S"}


def _starts(items, sre) -> tuple[set, bool]:
    """(the ASCII characters a match of the parsed `items` can begin with, whether it can be empty)."""
    chars = set()
    for op, arg in items:
        if op is sre.LITERAL:
            return chars | ({chr(arg)} if arg < 128 else set()), False
        if op is sre.NOT_LITERAL:
            return chars | {c for c in _ASCII if ord(c) != arg}, False
        if op is sre.ANY:
            return chars | set(_ASCII), False
        if op is sre.IN:
            return chars | {c for c in _ASCII if _in_class(c, arg, sre)}, False
        if op is sre.SUBPATTERN and not arg[1] and not arg[2]:  # a group without flags of its own
            first, can_be_empty = _starts(arg[3], sre)
        elif op is sre.ATOMIC_GROUP:
            first, can_be_empty = _starts(arg, sre)
        elif op is sre.BRANCH:
            each = [_starts(branch, sre) for branch in arg[1]]
            first, can_be_empty = set().union(*(f for f, _ in each)), any(e for _, e in each)
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            first, can_be_empty = _starts(arg[2], sre)
            can_be_empty = can_be_empty or arg[0] == 0
        elif op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):  # zero width: it only narrows what follows
            first, can_be_empty = set(), True
        else:
            raise _NotKnown(op)
        chars |= first
        if not can_be_empty:
            return chars, False
    return chars, True


def _in_class(char: str, items, sre) -> bool:
    """Whether the ASCII `char` is in the parsed character class `items`."""
    negated = bool(items) and items[0][0] is sre.NEGATE
    found = False
    for op, arg in items[negated:]:
        if op is sre.LITERAL:
            found = ord(char) == arg
        elif op is sre.RANGE:
            found = arg[0] <= ord(char) <= arg[1]
        elif op is sre.CATEGORY and getattr(arg, "name", None) in _CATEGORIES:  # (ASCII characters are in one alike with or without re.ASCII)
            found = re.fullmatch(_CATEGORIES[arg.name], char) is not None
        else:
            raise _NotKnown(op)
        if found:
            break
    return found != negated
