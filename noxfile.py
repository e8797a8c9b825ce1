"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s overhead`, `nox -s data_scale`."""

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[lint]")
    session.run("ruff", "check", "bench", "hydra_plugins", "tests", "benchmarks", "noxfile.py")


@nox.session
def overhead(session: nox.Session) -> None:
    """Harness overhead: the TRL job through the harness vs the same job as a plain TRL script
    (benchmarks/bare_trl.py), interleaved; posargs go to benchmarks/overhead.py (--rounds, --overrides)."""
    session.install("-e", ".")
    session.run("python", "benchmarks/overhead.py", *session.posargs)


@nox.session
def data_scale(session: nox.Session) -> None:
    """Data preparation on shibing624/medical's real size (1.95 M rows, generated): benchmarks/data_scale.py."""
    session.install("-e", ".")
    session.run("python", "benchmarks/data_scale.py", *session.posargs)
