from bench.core.config import frameworks


def pytest_addoption(parser):
    every = ",".join(frameworks())  # every registered framework (conf/framework/); skipped runs say why
    parser.addoption("--sftbench-frameworks", default=every, help="comma list of frameworks (default: %(default)s)")
    parser.addoption("--sftbench-repeats", type=int, default=3, help="rounds: runs of the job per framework")
    parser.addoption("--sftbench-overrides", default="train.max_steps=30", help="extra bench.run overrides")
