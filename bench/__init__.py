"""Speed benchmarks (`bench/bench_*.py`) and the probes that still answer an open question (`bench/probes/`).

Run them from the repository root as modules, e.g. `python -m bench.bench_generation --help` or
`python -m bench.probes.probe_acoustic --help`. They import the installed `dualspeechlm` and the shared helpers
of `bench/common.py`, never each other. Findings of the probes that were retired are in docs/experiments/.
"""
