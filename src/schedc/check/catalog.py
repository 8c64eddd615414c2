"""What the language knows by name: schedules, distributions, stop metrics.

Plain data, no JAX: `schedc check` validates calls against these signatures,
`schedc.compiler.schedules` lowers them to optax/jnp, the language server shows their
docs on hover and offers their names on completion. One table, read by all.

Argument kinds:
  number    a constant numeric expression (lets resolved)
  duration  a step count (non-negative integer) or a percentage of the enclosing span
  schedule  any schedule expression (a number is a constant schedule)
  map       `{boundary: scale, ...}`, boundaries are durations
  list      `[...]` of numbers (or of durations for `at=`)
  bool      `true` / `false`
  symbol    a bare name from `choices`
Constraints (`check`): "positive" (> 0), "nonneg" (>= 0), "fraction" (0 <= x <= 1),
"open_fraction" (0 < x < 1), "ge1" (>= 1).
"""

from __future__ import annotations

from functools import lru_cache

from schedc.check._optax_table import LEFT_OUT, OPTIMIZERS, TRANSFORMS
from schedc.lang.record import Record, record

REQUIRED = object()


@record
class ArgSpec(Record):
    """One parameter of a callable: its name, kind, default (`REQUIRED` when none) and constraint."""

    name: str
    kind: str
    default: object = REQUIRED
    check: str | None = None
    doc: str = ""
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@record
class CallSignature(Record):
    """A callable of the language.

    `arrow` is how many waypoints the leading `a -> b [-> c]` argument takes
    (0: the call has no arrow argument); `arrow_names` names them.
    `params` follow the arrow, positional or by keyword.
    """

    name: str
    params: tuple[ArgSpec, ...]
    doc: str
    arrow: int = 0
    arrow_names: tuple[str, ...] = ()
    lowers_to: str = ""
    optimizer: bool = False  # an optax optimizer (its table, not this file, lists the parameters)

    def usage(self) -> str:
        parts = [" -> ".join(self.arrow_names)] if self.arrow else []
        for p in self.params:
            if p.required:
                parts.append(p.name)
            else:
                default = "whole span" if p.default is None and p.kind == "duration" else _show(p.default)
                parts.append(f"[{p.name}={default}]")
        return f"{self.name}({', '.join(parts)})"

    def usage_help(self) -> str | None:
        """The `help:` of a call that does not match: how to write it (optimizers: too long to show)."""
        return None if self.optimizer else f"write `{self.usage()}`"

    def missing_help(self, param: ArgSpec) -> str | None:
        """The `help:` of a call that leaves out a required `param`."""
        return f"write `{self.name}({param.name}=...)`" if self.optimizer else self.usage_help()

    def parameters_note(self) -> str:
        """The note listing what the callable takes, under an unknown keyword."""
        if self.optimizer:
            return f"`optax.{self.name}` takes: " + ", ".join(p.name for p in self.params)
        return f"usage: {self.usage()}"


def _show(value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "none" if value is None else str(value)


def _sig(name, doc, *params, arrow=(), lowers_to=""):
    return CallSignature(name, tuple(params), doc, len(arrow), tuple(arrow), lowers_to)


_STEPS = ArgSpec("steps", "duration", None, "positive", "length of the schedule; left out: the whole enclosing span")
_EXPONENT = ArgSpec("exponent", "number", 1.0, "positive", "power applied to the cosine")

SCHEDULES: dict[str, CallSignature] = {
    s.name: s
    for s in (
        _sig("constant", "A constant value.", ArgSpec("value", "number"), lowers_to="optax.constant_schedule"),
        _sig("linear", "Linear from a to b over `steps`, then b.", _STEPS, arrow=("a", "b"), lowers_to="optax.linear_schedule"),
        _sig(
            "polynomial",
            "Polynomial from a to b: (a - b)(1 - t/steps)^power + b.",
            ArgSpec("power", "number", REQUIRED, "positive"),
            _STEPS,
            arrow=("a", "b"),
            lowers_to="optax.polynomial_schedule",
        ),
        _sig(
            "cosine",
            "Cosine decay from a to b over `steps`, then b.",
            _STEPS,
            _EXPONENT,
            arrow=("a", "b"),
            lowers_to="optax.cosine_decay_schedule",
        ),
        _sig(
            "exponential",
            "a * rate^((t - begin) / every); floored per interval with staircase; clipped at `end`.",
            ArgSpec("init", "number"),
            ArgSpec("rate", "number", REQUIRED, "positive"),
            ArgSpec("every", "duration", REQUIRED, "positive"),
            ArgSpec("begin", "duration", 0, "nonneg"),
            ArgSpec("staircase", "bool", False),
            ArgSpec("end", "number", None),
            lowers_to="optax.exponential_decay",
        ),
        _sig(
            "warmup_constant",
            "Linear warmup from a to peak over `warmup`, then peak.",
            ArgSpec("warmup", "duration", REQUIRED, "nonneg"),
            arrow=("a", "peak"),
            lowers_to="optax.warmup_constant_schedule",
        ),
        _sig(
            "warmup_cosine",
            "Linear warmup from a to peak, then cosine decay to end; `steps` includes the warmup.",
            ArgSpec("warmup", "duration", REQUIRED, "nonneg"),
            _STEPS,
            _EXPONENT,
            arrow=("a", "peak", "end"),
            lowers_to="optax.warmup_cosine_decay_schedule",
        ),
        _sig(
            "warmup_exponential",
            "Linear warmup from a to peak, then exponential decay (begin counts from the end of warmup).",
            ArgSpec("warmup", "duration", REQUIRED, "nonneg"),
            ArgSpec("rate", "number", REQUIRED, "positive"),
            ArgSpec("every", "duration", REQUIRED, "positive"),
            ArgSpec("begin", "duration", 0, "nonneg"),
            ArgSpec("staircase", "bool", False),
            ArgSpec("end", "number", None),
            arrow=("a", "peak"),
            lowers_to="optax.warmup_exponential_decay_schedule",
        ),
        _sig(
            "onecycle",
            "Cosine one-cycle: peak/div up to peak at pct_start, down to peak/(div*final_div).",
            ArgSpec("peak", "number", REQUIRED, "nonneg"),
            _STEPS,
            ArgSpec("pct_start", "number", 0.3, "fraction"),
            ArgSpec("div", "number", 25.0, "positive"),
            ArgSpec("final_div", "number", 1e4, "positive"),
            lowers_to="optax.cosine_onecycle_schedule",
        ),
        _sig(
            "linear_onecycle",
            "Linear one-cycle: peak/div -> peak at pct_start -> peak/div at pct_final -> peak/(div*final_div).",
            ArgSpec("peak", "number", REQUIRED, "nonneg"),
            _STEPS,
            ArgSpec("pct_start", "number", 0.3, "fraction"),
            ArgSpec("pct_final", "number", 0.85, "fraction"),
            ArgSpec("div", "number", 25.0, "positive"),
            ArgSpec("final_div", "number", 1e4, "positive"),
            lowers_to="optax.linear_onecycle_schedule",
        ),
        _sig(
            "piecewise",
            "v times every scale whose boundary has been reached (inclusive, cumulative).",
            ArgSpec("value", "number"),
            ArgSpec("boundaries", "map"),
            lowers_to="optax.piecewise_constant_schedule",
        ),
        _sig(
            "interpolate",
            "Interpolates between v and its cumulative scales at the boundaries.",
            ArgSpec("value", "number"),
            ArgSpec("boundaries", "map"),
            ArgSpec("kind", "symbol", "linear", choices=("linear", "cosine")),
            lowers_to="optax.piecewise_interpolate_schedule",
        ),
        _sig(
            "sgdr",
            "Restarts schedule S every period steps; each period is mult times the previous one.",
            ArgSpec("schedule", "schedule"),
            ArgSpec("period", "duration", REQUIRED, "positive"),
            ArgSpec("mult", "number", 1.0, "ge1"),
            lowers_to="optax.sgdr_schedule",
        ),
        _sig("smooth", "Cosine ease from a to b over the span (k1lib smooth).", _STEPS, arrow=("a", "b")),
        _sig("hump", "Rises from 0.8a + 0.2b to b at 30%, then falls to a (k1lib hump).", _STEPS, arrow=("a", "b")),
        _sig("exp", "Exponential ease from a to b, fast at first (k1lib exp).", _STEPS, arrow=("a", "b")),
        _sig("values", "values[i] at step i; the last value is held (noether CustomSchedule).", ArgSpec("values", "list")),
        _sig(
            "step",
            "v, multiplied by factor at each point of `at` (noether StepFixedSchedule).",
            ArgSpec("value", "number"),
            ArgSpec("factor", "number", REQUIRED, "nonneg"),
            ArgSpec("at", "list"),
        ),
        _sig(
            "every",
            "v, multiplied by factor every interval (noether StepIntervalSchedule).",
            ArgSpec("value", "number"),
            ArgSpec("factor", "number", REQUIRED, "nonneg"),
            ArgSpec("interval", "duration", REQUIRED, "positive"),
        ),
        _sig(
            "stepwise",
            "S held constant over each interval, at its value at the interval's start (noether's `interval: epoch`: `stepwise(S, 1 epoch)`).",
            ArgSpec("schedule", "schedule"),
            ArgSpec("interval", "duration", REQUIRED, "positive"),
        ),
        _sig("min", "Pointwise minimum.", ArgSpec("a", "schedule"), ArgSpec("b", "schedule")),
        _sig("max", "Pointwise maximum.", ArgSpec("a", "schedule"), ArgSpec("b", "schedule")),
        _sig("clip", "S clipped to [lo, hi].", ArgSpec("schedule", "schedule"), ArgSpec("lo", "number"), ArgSpec("hi", "number")),
    )
}

# Random and fixed initialisations (`init P ~ dist(...)`, params `init dist(...) at P`).
DISTRIBUTIONS: dict[str, CallSignature] = {
    s.name: s
    for s in (
        _sig("normal", "mean + std * N(0, 1)", ArgSpec("mean", "number", 0.0), ArgSpec("std", "number", 1.0, "positive")),
        _sig("uniform", "U[low, high)", ArgSpec("low", "number", 0.0), ArgSpec("high", "number", 1.0)),
        _sig("value", "a constant (params blocks; in phase bodies write `init P = v`)", ArgSpec("value", "number")),
    )
}

# `stop when METRIC < X [over N] [after M]`.
STOP_METRICS: dict[str, str] = {
    "loss": "stop as soon as the loss is below X",
    "loss_change": "from step M, every N steps: stop if the loss moved less than X over the last N steps "
    "(spectracles' Δloss rule; defaults N=50, M=100)",
}
STOP_DEFAULT_OVER = 50
STOP_DEFAULT_AFTER = 100

# Evaluation metrics (`eval "m.py:metrics"` returns {name: scalar}) are named `val.NAME`.
METRIC_PREFIX = "val."
# `stop when val.M stops TREND for N evals`, `keep WHICH val.M`: the words and the direction they
# mean (None: inferred from the metric's name, see `maximised`).
TRENDS: dict[str, bool | None] = {"improving": None, "increasing": True, "decreasing": False}
KEEP_WHICH: dict[str, bool | None] = {"best": None, "highest": True, "lowest": False}
# Metric names (or parts of them) where higher is better; every other metric is minimised.
_HIGHER_IS_BETTER = ("acc", "accuracy", "auc", "f1", "precision", "recall", "r2", "score", "iou", "dice", "map", "bleu", "top1", "top5")


def maximised(metric: str, stated: bool | None = None) -> bool:
    """Whether a larger value of `metric` (`val.accuracy`) is better: as stated, else inferred from its
    name (accuracy, auc, f1, precision, recall, r2, score, ... are maximised; losses and errors minimised)."""
    if stated is not None:
        return stated
    words = metric.removeprefix(METRIC_PREFIX).lower().replace("-", "_").split("_")
    return any(word in _HIGHER_IS_BETTER for word in words)

DEFAULT_STATUSES = ("fixed", "free")
# words people write for them (PyTorch's `requires_grad`, fine-tuning's "frozen"), which spelling
# alone would misread (`frozen` is nearer `free` than `fixed`)
DEFAULT_SYNONYMS = {"frozen": "fixed", "freeze": "fixed", "fix": "fixed", "const": "fixed", "constant": "fixed", "trainable": "free", "train": "free", "unfrozen": "free", "learn": "free"}

# Optimizer hyperparameters that are decay rates of moving averages: within [0, 1) (E0221).
DECAY_RATES = frozenset({"b1", "b2", "b3", "momentum", "decay", "rho"})


# The optimizer of a phase when neither it nor an `optimizer` directive names one.
DEFAULT_OPTIMIZER = "adam"

# `optimizer chain(T1, T2, ...)`: optax.chain of transformations, each by name (`clip(1.0)`, `adam`, `contrib.muon`)
CHAIN = "chain"

# dtype names the language accepts as values of optax's dtype arguments (`mu_dtype=bfloat16`)
DTYPES = ("bfloat16", "float16", "float32", "float64")


def transform_params(name: str) -> tuple:
    """optax's signature of a nameable optimizer or transformation (tools/gen_optax_table.py):
    ((parameter, has_default, default_repr, kind), ...), or () when the name is unknown."""
    return OPTIMIZERS.get(name) or TRANSFORMS.get(name) or ()


def is_transform(name: str) -> bool:
    return name in OPTIMIZERS or name in TRANSFORMS


def left_out_because(name: str) -> str | None:
    """Why optax's transformation `name` is left out of the language, or None (not one of those)."""
    return LEFT_OUT.get(name)


@lru_cache(maxsize=None)
def optimizer_signature(name: str, shown_as: str | None = None) -> CallSignature | None:
    """The signature of an optax optimizer or transformation (`transform_params`), or None for
    an unknown name. `shown_as`: the name messages use (`plateau` for contrib.reduce_on_plateau).

    A required `learning_rate` is optional here: it comes from the phase's `lr` (E0215 says when
    it is missing). Kinds are the table's, a number being a number or a schedule.
    """
    if not is_transform(name) and not transform_params(name):
        return None
    specs = tuple(
        ArgSpec(pname, "schedule" if kind == "number" else kind, default if has_default or pname == "learning_rate" else REQUIRED)
        for pname, has_default, default, kind in transform_params(name)
    )
    return CallSignature(shown_as or name, specs, "", optimizer=True)

# The seeds `jax.random.key` takes: a signed 64-bit integer.
SEEDS = range(-(2**63), 2**63)
# Largest step count: optax counts in int32.
MAX_STEPS = 2**31 - 1
# Longest `stop when loss_change ... over N` window: the run keeps N losses in a ring buffer.
MAX_STOP_WINDOW = 1_000_000
# Largest magnitude of a number: float32.
MAX_NUMBER = 3.4028234663852886e38

KEYWORD_DOCS: dict[str, str] = {
    "model": '`model "file.py:factory"` — where parameter paths come from (path relative to this file); the factory returns the model, or `(model, state)` as `eqx.nn.make_with_state` does',
    "loss": '`loss "file.py:fn"` — the loss `schedc run` minimises: `fn(model, *data)`, or `fn(model, state, *data)` returning `(loss, state)` when the model comes with a state',
    "data": '`data "file.py:fn"` — returns the loss\'s extra arguments (a tuple, or a dict of keyword arguments), or an iterable of such batches (streamed)',
    "seed": "`seed N` — the root of every random init's key",
    "optimizer": "`optimizer OPT` — an optax optimizer or transformation by name (`adam`, `contrib.muon`), with keyword arguments, "
    "or `chain(T1, T2, ...)` of them; any number may be a schedule",
    "accumulate": "`accumulate N` — accumulate gradients over N steps, one update per N (optax.MultiSteps); a directive or a phase clause",
    "ema": "`ema DECAY` — keep an exponential moving average of the free parameters (`Result.ema_model`); a directive or a phase clause",
    "lr": "`lr EXPR` — the learning rate: a number or a schedule of the phase-local step, optionally `* plateau(...)`",
    "default": "`default fixed|free` — the status of parameters no statement names (default: fixed)",
    "let": "`let NAME = EXPR` — a named constant or schedule",
    "phase": "`phase [NAME] STEPS [lr EXPR] [optimizer OPT] [accumulate N] [ema DECAY] < STATEMENTS >` — one stage of the fit",
    "repeat": "`repeat N < PHASES >` — the phases N times over",
    "params": "`params < PATTERN: SPEC | SPEC; ... >` — parameter-centric specs (spectracles style)",
    "free": "`free PATTERNS [lr EXPR] [optimizer OPT]` — trainable in this phase (its own group if lr/optimizer given)",
    "fix": "`fix PATTERNS` — not trained in this phase",
    "fixed": "`fixed in PHASES` — fixed in those phases, free in every other one",
    "init": "`init PATTERNS ~ normal(m, s) | ~ uniform(lo, hi) | = NUMBER | = reset` — set at phase start",
    "reset": "`init P = reset` — back to its value before the schedule began",
    "carry": "`carry state` — keep the optimizer state of parameters free in the previous phase and this one",
    "stop": "`stop when loss < X` | `stop when loss_change < X [over N] [after M]` | `stop when val.M < X` | `stop when val.M stops improving for N evals`",
    "validation": '`validation "file.py:fn"` — returns the held-out data passed to the metrics function',
    "eval": '`eval "file.py:metrics" every N steps | every epoch` — `metrics(model, *validation) -> {name: scalar}`, read as `val.NAME`',
    "every": "`eval ... every N steps` / `every step` / `every epoch` / `every N epochs` — how often the evaluation runs (phase-local)",
    "batch": "`batch N` — minibatches of N examples drawn from a fresh permutation each epoch (directive, or per phase after the length)",
    "epoch": "`N epochs` — a length or duration in passes over the training data (steps per epoch = examples // batch)",
    "epochs": "`N epochs` — a length or duration in passes over the training data (steps per epoch = examples // batch)",
    "steps": "`every N steps` (`every step`: each step) — an evaluation interval in optimisation steps",
    "stops": "`stop when val.M stops improving for N evals` — patience in evaluations (also `stops increasing` / `stops decreasing`)",
    "evals": "`for N evals` — a patience counted in evaluations",
    "keep": "`keep best val.M` — at the phase end restore the weights of the best evaluation (also `keep highest` / `keep lowest`)",
    "in": "`free in PHASES` / `fixed in PHASES`",
    "after": "`free after P` — free from phase P on; in stop rules: the first step checked",
    "until": "`free until P` — free in phases 0..P",
    "at": "`init DIST at P` — apply the init at the start of phase P",
    "over": "`over N` — the window of a loss_change stop rule (default 50)",
    "for": "`S for N then T` — S for N steps (or N% of the span), then T on its own clock",
    "then": "`S for N then T` — S for N steps (or N% of the span), then T on its own clock",
}
