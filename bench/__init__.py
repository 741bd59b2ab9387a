"""rhei_lake benchmarks: ``python -m bench [--quick] [--only NAME ...]``.

Every scenario runs its *limit* beside it in the same process run (the same
data through the cheapest possible path) and reports our figure as a ratio of
it: absolute times on shared 2-core machines are noise, ratios are not.
"""
