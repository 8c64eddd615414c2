" Vim syntax file
" Language:    schedc schedule (.sched)
" Maintainer:  the schedc authors
"
" Follows the grammar's contexts where they change what a word is: after
" free/fix/init come parameter patterns (`free model.lr` names a parameter,
" not two keywords), `params < pattern: spec | spec; ... >` has its own items,
" and `phase NAME STEPS`, `let NAME`, `optimizer NAME` and `stop when METRIC`
" name things.

if exists('b:current_syntax')
  finish
endif

let s:cpo_save = &cpo
set cpo&vim

syn case match

syn keyword schedTodo contained TODO FIXME XXX NOTE
syn match schedComment "#.*$" contains=schedTodo,@Spell

syn region schedString start=+"+ skip=+\\.+ end=+"+ end=+$+ contains=schedEscape
syn match schedEscape +\\.+ contained

" Numbers: 10_000, 0.5, .5, 1e-3, and percentages 10%.
syn match schedNumber "\<\d\%(_\=\d\)*\%(\.\%(\d\%(_\=\d\)*\)\=\)\=\%([eE][+-]\=\d\+\)\=%\="
syn match schedNumber "\%(\<\|\W\)\@<=\.\d\%(_\=\d\)*\%([eE][+-]\=\d\+\)\=%\="

" Names are Python identifiers: \h and \w widened with any non-ASCII character (`σ`, `vσ_raw`).
syn match schedPlaceholder "\$\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*"
syn match schedOperator "->\|\*\*\|[-+*/~=|]"
syn match schedDelimiter "[<>]"
syn keyword schedBoolean true false

" Calls: known schedules and distributions, then any other name followed by `(`.
syn match schedFunction "\<\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*\ze\s*("
syn match schedBuiltin "\<\%(constant\|linear\|polynomial\|cosine\|exponential\|warmup_constant\|warmup_cosine\|warmup_exponential\|onecycle\|linear_onecycle\|piecewise\|interpolate\|sgdr\|smooth\|hump\|exp\|values\|step\|every\|stepwise\|min\|max\|clip\|normal\|uniform\|value\)\ze\s*("
" A keyword argument: `name=value` inside a call (even `at=` in step(...)).
syn match schedArgument "\<\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*\ze\s*=[^=]"

" Directives and declarations.
syn keyword schedInclude model loss data validation
syn keyword schedDirective seed lr default accumulate ema batch
" `eval "file.py:metrics" every N steps | every epoch`: `every` is a keyword only there (else a schedule).
syn keyword schedInclude eval nextgroup=schedEvalTarget skipwhite
syn region schedEvalTarget start=+"+ skip=+\\.+ end=+"+ end=+$+ contained nextgroup=schedEvery skipwhite
syn keyword schedEvery every contained nextgroup=schedEveryUnit skipwhite
" `every step`, `every epoch`: the count left out (one); `step` alone is otherwise the schedule `step(...)`.
syn match schedEveryUnit "\<\%(steps\=\|epochs\=\)\>" contained
syn keyword schedKeyword epoch epochs steps evals stops
syn keyword schedStatement keep
syn keyword schedDirective optimizer nextgroup=schedOptimizerName skipwhite
syn match schedOptimizerName "\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*\%(\.\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*\)*" contained
syn keyword schedDeclaration repeat
syn keyword schedDeclaration let nextgroup=schedLetName skipwhite
syn match schedLetName "\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*" contained
syn keyword schedDeclaration phase nextgroup=schedPhaseName skipwhite
syn match schedPhaseName "\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*\ze\s\+\%([0-9.$]\|\%(\%(lr\|optimizer\|accumulate\|ema\|batch\|epochs\=\)\>\)\@!\%(\h\|[^\x00-\x7f]\)\)" contained

" Statements of a phase body; free/fix/init are followed by patterns.
syn keyword schedStatement free fix init nextgroup=schedPattern skipwhite skipnl
syn keyword schedStatement carry stop
syn keyword schedKeyword fixed reset state over after until in at for then
syn keyword schedKeyword when nextgroup=schedMetric skipwhite
syn match schedMetric "\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*\%(\.\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*\)\=" contained
" `plateau(on=val.loss)`: the metric a plateau follows
syn match schedPlateauMetric "\%(\<on\s*=\s*\)\@<=\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*\%(\.\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*\)\="

" A parameter pattern, one token: names, `*`/`**`, `{a,b}`, `[0]`, `[*]`, `["key"]`.
" Not a pattern: `free in 0` (params specs) and `init normal(...)` (a call).
syn match schedPattern "\%(\%(in\|after\|until\)\s\+[[:alnum:]_$]\)\@!\%([[:alnum:]_*.]\|{[[:alnum:]_*,]*}\|\[\%(\d\+\|\*\|\"\%([^\"\\]\|\\.\)*\"\)\]\)\+\%([[:alnum:]_*{}.\[\]\"]\|\s*(\)\@!" contained nextgroup=schedPatternComma skipwhite skipnl
syn match schedPatternComma "," contained nextgroup=schedPattern skipwhite skipnl

" params < PATTERNS: SPEC | SPEC; ... >: patterns before `:`, specs after it.
syn keyword schedDeclaration params
syn region schedParams matchgroup=schedDelimiter start="\%(\<params\s*\)\@<=<" end=">" contains=schedParamPattern,schedParamSpec,schedComment
syn match schedParamPattern "\%([[:alnum:]_*.]\|{[[:alnum:]_*,]*}\|\[\%(\d\+\|\*\|\"\%([^\"\\]\|\\.\)*\"\)\]\)\+" contained
syn region schedParamSpec matchgroup=schedDelimiter start=":" end=";" end="-\@<!\ze>" contained contains=schedSpecKeyword,schedPhaseRef,schedNumber,schedBuiltin,schedFunction,schedArgument,schedOperator,schedComment,schedString
syn keyword schedSpecKeyword free fixed init in after until at contained
syn match schedPhaseRef "\<\%(\h\|[^\x00-\x7f]\)\%(\w\|[^\x00-\x7f]\)*\>\%(\s*[(=]\)\@!" contained

" .sched files are short: always highlight from the top, so a params block is
" recognised wherever the window starts.
syn sync fromstart

hi def link schedTodo           Todo
hi def link schedComment        Comment
hi def link schedString         String
hi def link schedEvalTarget     String
hi def link schedEvery          Keyword
hi def link schedEveryUnit      Keyword
hi def link schedEscape         SpecialChar
hi def link schedNumber         Number
hi def link schedPlaceholder    Special
hi def link schedOperator       Operator
hi def link schedDelimiter      Delimiter
hi def link schedBoolean        Boolean
hi def link schedFunction       Function
hi def link schedBuiltin        Function
hi def link schedArgument       Identifier
hi def link schedInclude        Include
hi def link schedDirective      Keyword
hi def link schedOptimizerName  Type
hi def link schedDeclaration    Structure
hi def link schedLetName        Identifier
hi def link schedPhaseName      Label
hi def link schedStatement      Statement
hi def link schedKeyword        Keyword
hi def link schedMetric         Constant
hi def link schedPlateauMetric  Constant
hi def link schedPattern        Identifier
hi def link schedPatternComma   Delimiter
hi def link schedParamPattern   Identifier
hi def link schedSpecKeyword    Keyword
hi def link schedPhaseRef       Label

let b:current_syntax = 'sched'

let &cpo = s:cpo_save
unlet s:cpo_save
