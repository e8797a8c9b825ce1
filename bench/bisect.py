"""`python -m bench.bisect framework=trl [framework.source=REPO] good=REF bad=REF`: the commit or release that
made a metric regress (bench/sweep/bisect.py)."""

import sys

from bench.sweep.bisect import main

if __name__ == "__main__":
    sys.exit(main())
