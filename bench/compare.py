"""`python -m bench.compare BASELINE CANDIDATE`: the regression gate (bench/analysis/gate.py)."""

import sys

from bench.analysis.gate import main

if __name__ == "__main__":
    sys.exit(main())
