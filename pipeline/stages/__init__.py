"""The stages, each a module with one `run` function from named inputs to named outputs."""
