"""Inside a framework's own Python environment: `python -m bench.worker spec.json` (`main`) drives the
framework through its runner (`runners/<framework>`, the contract in `runners/base`), records each step
(`callback`) and scores the held-out rows (`evaluate`).

May import: bench.core (its standard-library modules: the environment has no omegaconf) and, in a runner
only, the framework. Never bench.sweep or bench.analysis.
"""
