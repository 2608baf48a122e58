"""Benchmark import: read vLLM / SGLang result files, normalize, pair, check fairness, plot."""
