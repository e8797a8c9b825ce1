"""`python -m bench.run [overrides]`: the sweep (bench/sweep/app.py)."""

from bench.sweep import app

if __name__ == "__main__":
    app.main()
