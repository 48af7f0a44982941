"""Speed benchmarks (`bench/bench_*.py`), the performance page (`bench/performance.py`) and the probes that still
answer an open question (`bench/probes/`).

Run them from the repository root as modules, e.g. `python -m bench.bench_generation --help`,
`python -m bench.performance --help` or `python -m bench.probes.probe_acoustic --help`. The `bench_*.py` scripts
import the installed `dualspeechlm` and the shared helpers of `bench/common.py`, never each other; each measures
through functions that return plain dicts, which the performance page (`performance_speech.py`,
`performance_training.py`, `performance_page.py`) gathers. Findings of the probes that were retired are in
docs/experiments/.
"""
