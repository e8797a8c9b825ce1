"""`python -m bench.export SWEEP_DIR`: a sweep's runs to MLflow or TensorBoard (bench/analysis/export.py)."""

import sys

from bench.analysis.export import main

if __name__ == "__main__":
    sys.exit(main())
