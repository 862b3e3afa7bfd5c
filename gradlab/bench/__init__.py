"""Benchmarks: speed and overhead measured side by side (``gradlab bench ...``).

Speed is measured here, never asserted in tests. Shared helpers live in
gradlab.bench.timing; each benchmark is a function returning a plain dict.
"""
