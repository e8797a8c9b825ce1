"""What the sweep, the worker and the reading side share: the job spec (`spec`), the run record (`record`),
the rows (`data`), errors, paths, the run directory's files (`results`), the metric registry (`metrics`),
resource measures over samples (`measure`, `flops`), the model's source (`models`) and the composed config
(`config`).

May import: the standard library and bench.core; `config` also omegaconf (the worker never imports it: a
framework environment has no omegaconf); `data` pyarrow and ijson where used; `models` torch and
transformers where used (the worker builds the tiny model in its environment). Never bench.sweep,
bench.worker or bench.analysis.
"""
