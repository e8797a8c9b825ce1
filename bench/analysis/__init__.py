"""The reading side, in layers: the run record (bench.core.record) -> the runs table (`runs`, with a run's
metrics from its record: `summary`) -> `findings` and `replay` -> `report`, `plots`, the gate (`gate`) and
`export`; `frontier_table` reads a frontier sweep.

May import: bench.core and the layers before it; never bench.sweep, bench.worker or a framework. The gate
and the exporter load no plotting or statistics library.
"""
