"""The Python surface over the pipeline: `schedc.compile` and `Program`, spectracles-style
`build_schedule`, DSL strings embedded in Python, and `schedc.schedule`."""
