"""`python -m bench.frontier`: the memory frontier (bench/sweep/frontier.py)."""

from bench.sweep import frontier

if __name__ == "__main__":
    frontier.cli()
