"""The sweep's parent process: the Hydra app (`app`, behind `python -m bench.run`), the rows selected once
per source (`selection`), framework environments (`envs`) and sources (`source`), the worker's launch and
sampling (`launch`, `sampler`), published scenarios (`published`) and the memory frontier (`frontier`).

May import: bench.core and bench.analysis (a run's summary, the sweep's report at its end). Never a framework
or bench.worker: it starts the worker as a process in the framework's own environment.
"""
