"""`python -m bench.worker spec.json`: one job in the framework's environment (bench/worker/main.py)."""

import sys

from bench.worker.main import main

sys.exit(main(sys.argv[1:]))
