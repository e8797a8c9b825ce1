"""`python -m bench.report SWEEP_DIR`: a sweep's report (bench/analysis/report.py)."""

import sys

from bench.analysis.report import main

if __name__ == "__main__":
    sys.exit(main())
