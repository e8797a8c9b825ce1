"""`python -m bench.history SWEEP...`: one job's metrics across releases or commits (bench/analysis/history.py)."""

import sys

from bench.analysis.history import main

if __name__ == "__main__":
    sys.exit(main())
