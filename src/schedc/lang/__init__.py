"""Stage 1, the language (JAX-free): the grammar, the AST with spans, parsing with error
recovery, constant folding of expressions, the diagnostic type and its renderers, the pattern
(glob) language, and the model-free facts about a program (`program`: repeat expansion, phase
references, the `let` environment, placeholders)."""
