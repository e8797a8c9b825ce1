def pytest_addoption(parser):
    parser.addoption("--sftbench-frameworks", default="trl,llamafactory", help="comma list of frameworks")
    parser.addoption("--sftbench-repeats", type=int, default=3, help="rounds: runs of the job per framework")
    parser.addoption("--sftbench-overrides", default="train.max_steps=30", help="extra bench.run overrides")
