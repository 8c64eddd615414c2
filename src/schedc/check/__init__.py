"""Stage 2, model-free checks (JAX-free): the catalog of schedules, optimizers and
distributions (the one table the checker, the lowering, the lexer and the language server
read), and the passes that turn an AST into diagnostics without a model."""
