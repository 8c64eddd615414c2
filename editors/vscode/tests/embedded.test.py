# SYNTAX TEST "source.python" "schedules inside schedc.compile(...) strings"
import schedc

prog = schedc.compile(r"""
#                     ^ storage.type.string.python
#                      ^^^ punctuation.definition.string.begin.python
phase warmup 300 lr 0.05 < free gp.coefficients >
# <----- meta.embedded.block.sched storage.type.phase.sched
#     ^^^^^^ meta.embedded.block.sched entity.name.section.phase.sched
#                               ^^ meta.embedded.block.sched meta.pattern.sched variable.other.parameter.sched
""", model)
# <--- punctuation.definition.string.end.python
#  ^ - meta.embedded.block.sched
prog = schedc.compile("phase 10 lr cosine(0.1 -> 0) < free ** >", model)
#                     ^ punctuation.definition.string.begin.python
#                      ^^^^^ meta.embedded.block.sched storage.type.phase.sched
#                                  ^^^^^^ meta.embedded.block.sched support.function.schedule.sched
#                                                              ^ punctuation.definition.string.end.python
other = compile("phase 10 lr 0.1 < free a >", "f", "exec")
#                ^^^^^ string.quoted.single.python - meta.embedded.block.sched
lr = schedc.schedule("warmup_cosine(0 -> 1e-3 -> 0, warmup=5%)", steps=10_000)
#                     ^^^^^^^^^^^^^ meta.embedded.block.sched support.function.schedule.sched
#                                                          ^^ meta.embedded.block.sched constant.numeric.percent.sched
