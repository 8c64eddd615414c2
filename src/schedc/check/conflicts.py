"""Rules over the phases after `repeat` expansion: phase names (E0103) and references (E0109),
and what is said twice or in contradiction about one pattern text — both free and fixed (E0301),
initialised twice (E0302), two stop rules of a kind (E0303) — plus statements overridden by
later ones (W0102) and phases that free nothing (W0104).

Without a model a pattern is its text. The resolver finds the same kinds of problem between
different patterns that match one parameter; it words them with `init_twice`, `overridden` and
`frees_nothing` below, so each code keeps one wording and one owner, and it asks
`overridden_by_text` and `idle_phases` which findings are already this module's, so that each
is reported once.
"""

from __future__ import annotations

from schedc.check.lint import Rule
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, Label, did_you_mean
from schedc.lang.program import ExpandedPhase, default_free, header_span, ref_phases, spec_phases

_FREE_SPECS = ("free_in", "free_after", "free_until")
_FREES_NOTHING_HELP = "add a `free` statement, or a params spec that frees something in it"


# ---------------------------------------------------------------- the diagnostics (shared with the resolver)


def init_twice(name: str, span: n.Span, first: n.Span, place: str, narrow: bool = False) -> Diagnostic:
    """E0302: `name` (a pattern text, or a parameter path) initialised twice in `place`."""
    help = "keep one of the inits (narrow one of the patterns)" if narrow else "keep one of the inits"
    return Diagnostic("E0302", f"`{name}` is initialised twice in {place}", span, labels=(Label(first, "first init here"),), help=help)


def overridden(stmt, later: list, by_parameter: bool = False) -> Diagnostic:
    """W0102: a `free`/`fix` statement whose every pattern (or, with a model, every parameter) a later one decides."""
    keyword = "free" if isinstance(stmt, n.Free) else "fix"
    what = f"`{keyword} {', '.join(p.text for p in stmt.patterns)}` is overridden by later statements"
    if by_parameter:
        what += ": every parameter it names is decided later"
    return Diagnostic(
        "W0102",
        what,
        stmt.span,
        labels=tuple(Label(s.span, "overridden here") for s in later),
        help=f"remove it (the last statement naming a {'parameter' if by_parameter else 'pattern'} wins)",
    )


def frees_nothing(where: str, phase: n.Phase) -> Diagnostic:
    """W0104: `where` (a phase label) frees no parameter."""
    return Diagnostic("W0104", f"{where} frees no parameter", header_span(phase), help=_FREES_NOTHING_HELP)


# ---------------------------------------------------------------- text-level findings (asked by the resolver too)


def last_statements(statements) -> dict[str, n.Statement]:
    """Pattern text -> the last of `statements` (a phase body's `free`/`fix`) naming it."""
    last: dict[str, n.Statement] = {}
    for stmt in statements:
        for p in stmt.patterns:
            last[p.text] = stmt
    return last


def overridden_by_text(statements) -> dict[int, list]:
    """W0102 without a model: id(statement) -> the later statements naming its pattern texts again,
    for each `free`/`fix` statement whose every pattern text a later one of `statements` names."""
    last = last_statements(statements)
    out = {}
    for stmt in statements:
        later = [last[p.text] for p in stmt.patterns]
        if all(s is not stmt for s in later):
            out[id(stmt)] = list({id(s): s for s in later}.values())
    return out


Claims = dict[str, list[tuple[str, n.Spec, list[int]]]]


def params_claims(file: n.File, phases: tuple[ExpandedPhase, ...]) -> tuple[Claims, list[n.PhaseRef]]:
    """What the params blocks say, by pattern text: text -> [(claim, spec, phase indices)], claim
    "free", "fixed" or "init"; and the first unknown phase reference of each spec that has one
    (E0109: that spec counts for nothing)."""
    claims: Claims = {}
    unknown: list[n.PhaseRef] = []
    for item in file.items:
        for entry in item.entries if isinstance(item, n.Params) else ():
            for spec in entry.specs:
                bad = next((ref for ref in spec.phases if not ref_phases(ref, phases)), None)
                if bad is not None:
                    unknown.append(bad)
                    continue
                claim = "free" if spec.kind in _FREE_SPECS else "fixed" if spec.kind == "fixed_in" else "init"
                for p in entry.patterns:
                    claims.setdefault(p.text, []).append((claim, spec, spec_phases(spec, phases)))
    return claims, unknown


def idle_phases(file: n.File, phases: tuple[ExpandedPhase, ...], claims: Claims | None = None) -> dict[int, tuple[n.Phase, list[int]]]:
    """W0104 without a model: id(phase node) -> (the node, its instances that free nothing), for each
    phase with no `free` statement some instance of which no params spec frees anything in
    (none under `default free`). In the order of the phases' first instances. `claims`: the
    file's `params_claims`, when the caller has them."""
    if default_free(file):
        return {}
    freed: set[int] = set()
    for rows in (claims if claims is not None else params_claims(file, phases)[0]).values():
        for claim, _, indices in rows:
            if claim == "free":
                freed.update(indices)
            elif claim == "fixed":  # `fixed in` these phases: free in the others
                freed.update(set(range(len(phases))) - set(indices))
    out: dict[int, tuple[n.Phase, list[int]]] = {}
    for ph in phases:
        if ph.index not in freed and not any(isinstance(s, n.Free) for s in ph.phase.body):
            out.setdefault(id(ph.phase), (ph.phase, []))[1].append(ph.index)
    return out


# ---------------------------------------------------------------- what the file says, per phase node


class _PhaseInfo:
    """What one phase node (shared by the instances of a repeat) says about each pattern text."""

    def __init__(self, phase: n.Phase) -> None:
        self.phase = phase
        self.instances: list[int] = []
        self.status: dict[str, n.Statement] = {}  # text -> last free/fix naming it
        self.inits: dict[str, n.Init] = {}  # text -> first init of it


# ---------------------------------------------------------------- rules


class PhaseNames(Rule):
    """E0103: two phases with one name (the instances of a `repeat` share theirs)."""

    def finish(self) -> None:
        first: dict[str, n.Phase] = {}
        nodes = {id(ph.phase): ph for ph in self.ctx.phases or ()}  # each phase once, not once per repeat
        for ph in nodes.values():
            if ph.name is None:
                continue
            seen = first.setdefault(ph.name, ph.phase)
            if seen is not ph.phase:
                self.ctx.report(Diagnostic("E0103", f"a phase named `{ph.name}` already exists", ph.phase.name.span, labels=(Label(seen.name.span, "first defined here"),), help="phase names must be unique (phases repeated by `repeat` share theirs)"))


class Conflicts(Rule):
    """E0109, E0301, E0302, E0303, W0102 and W0104 over the expanded phases and the params blocks."""

    def finish(self) -> None:
        if self.ctx.phases is None:
            return
        infos = self._phase_infos()
        claims = self._params_claims()
        self._params_conflicts(claims)
        self._body_vs_params(infos, claims)
        self._frees_nothing(claims)

    def _phase_infos(self) -> dict[int, _PhaseInfo]:
        infos: dict[int, _PhaseInfo] = {}
        for ph in self.ctx.phases:
            info = infos.get(id(ph.phase))
            if info is None:
                info = infos[id(ph.phase)] = self._analyse_body(ph.phase)
            info.instances.append(ph.index)
        return infos

    def _analyse_body(self, phase: n.Phase) -> _PhaseInfo:
        """Per-body checks (W0102, E0302, E0303) and what the body says about each pattern text."""
        report = self.ctx.report
        info = _PhaseInfo(phase)
        statuses = [s for s in phase.body if isinstance(s, (n.Free, n.Fix))]
        info.status = last_statements(statuses)
        overridden_here = overridden_by_text(statuses)
        for stmt in statuses:
            if id(stmt) in overridden_here:
                report(overridden(stmt, overridden_here[id(stmt)]))
        stops: dict[str, n.Stop] = {}
        for stmt in phase.body:
            if isinstance(stmt, n.Init):
                for p in stmt.patterns:
                    first = info.inits.setdefault(p.text, stmt)
                    if first is not stmt:
                        report(init_twice(p.text, p.span, first.span, "this phase"))
            elif isinstance(stmt, n.Stop):
                first = stops.setdefault(stmt.metric.id, stmt)
                if first is not stmt:
                    report(Diagnostic("E0303", f"a second `{stmt.metric.id}` stop rule in this phase", stmt.span, labels=(Label(first.span, "first rule here"),), help="merge them into one rule"))
        return info

    def _params_claims(self) -> Claims:
        """`params_claims`, reporting each unknown phase reference (E0109)."""
        phases = self.ctx.phases
        claims, unknown = params_claims(self.ctx.file, phases)
        if self.ctx.partial:  # items lost to syntax errors: the phases are not all known
            return claims
        count = len(phases)
        for ref in unknown:
            if isinstance(ref.target, int):
                self.ctx.report(Diagnostic("E0109", f"phase {ref.target} does not exist (the file has {count} phase{'s' * (count != 1)}, numbered from 0)", ref.span))
            else:
                names = sorted({p.name for p in phases if p.name})
                self.ctx.report(Diagnostic("E0109", f"no phase is named `{ref.target}`", ref.span, help=did_you_mean(ref.target, names)))
        return claims

    def _params_conflicts(self, claims) -> None:
        """Each spec against the earlier specs of its text: for each phase it contradicts one in,
        the nearest earlier spec it contradicts is named."""
        phases = self.ctx.phases
        for text, rows in claims.items():
            for i, (claim, spec, indices) in enumerate(rows):
                found: dict[tuple[str, int], n.Spec] = {}  # (kind, first shared phase) -> the latest earlier spec
                for claim0, spec0, indices0 in rows[:i]:
                    both = sorted(set(indices) & set(indices0))
                    if both and ({claim, claim0} == {"free", "fixed"} or claim == claim0 == "init"):
                        found[("E0302" if claim == "init" else "E0301", both[0])] = spec0
                for (code, k), spec0 in found.items():
                    if code == "E0301":
                        self.ctx.report(Diagnostic("E0301", f"`{text}` is both free and fixed in {phases[k].label}", spec.span, labels=(Label(spec0.span, "contradicted here"),), help="a parameter has one status per phase: drop one of the specs"))
                    else:
                        self.ctx.report(init_twice(text, spec.span, spec0.span, phases[k].label))

    def _body_vs_params(self, infos: dict[int, _PhaseInfo], claims) -> None:
        phases = self.ctx.phases
        for info in infos.values():
            instances = set(info.instances)
            for text, stmt in info.status.items():
                said = "free" if isinstance(stmt, n.Free) else "fixed"
                for claim, spec, indices in claims.get(text, ()):
                    both = sorted(instances.intersection(indices))
                    if both and claim in ("free", "fixed") and claim != said:
                        self.ctx.report(Diagnostic("E0301", f"`{text}` is {said} in the body of {phases[both[0]].label} but {claim} in the params block", spec.span, labels=(Label(stmt.span, f"{said} here"),), help="a parameter has one status per phase: drop one of them"))
            for text, init in info.inits.items():
                for claim, spec, indices in claims.get(text, ()):
                    both = sorted(instances.intersection(indices))
                    if both and claim == "init":
                        self.ctx.report(init_twice(text, spec.span, init.span, phases[both[0]].label))

    def _frees_nothing(self, claims: Claims) -> None:
        phases = self.ctx.phases
        for phase, idle in idle_phases(self.ctx.file, phases, claims).values():
            where = phases[idle[0]].label + (f" (and {len(idle) - 1} more instances)" if len(idle) > 1 else "")
            self.ctx.report(frees_nothing(where, phase))
