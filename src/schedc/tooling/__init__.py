"""Editor tooling (JAX-free): the formatter, the Pygments lexer and the language server."""
