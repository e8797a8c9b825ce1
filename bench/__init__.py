"""sftbench: one LoRA SFT job through competing frameworks, compared on speed, memory and quality.

The modules here are the commands people type (`python -m bench.run`, `bench.report`, `bench.compare`,
`bench.export`, `bench.frontier`, `bench.history`, `bench.bisect`); the code is in four packages, by where it runs
(docs/architecture.md):

- `bench.core`: what both sides import (the job spec, the run record, the rows, errors, paths, the config);
- `bench.sweep`: the sweep's parent process (environments, launch, sampling, the rows selected once);
- `bench.worker`: inside a framework's own environment (`python -m bench.worker`, the runners);
- `bench.analysis`: the reading side (the runs table, findings, replay, report, plots, gate, export).

tests/test_boundaries.py holds what each may import.
"""
