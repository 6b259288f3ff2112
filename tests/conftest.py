from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _store_in_a_temporary_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs record themselves in the store: keep the default store out of the repository.

    Set in os.environ so that subprocesses (examples, `dask worker`) use it too.
    """
    old = os.environ.get("XLIBRARY_STORE")
    os.environ["XLIBRARY_STORE"] = str(tmp_path_factory.mktemp("store"))
    yield
    if old is None:
        os.environ.pop("XLIBRARY_STORE", None)
    else:
        os.environ["XLIBRARY_STORE"] = old


@pytest.fixture(autouse=True)
def _dask_scheduler_config_restored() -> Iterator[None]:
    """A test whose Client could not start (a loaded machine) can leave Dask's global
    ``scheduler`` set to a client that is gone: every later compute would fail. Undo it."""
    import dask

    before = dask.config.get("scheduler", None)
    yield
    if dask.config.get("scheduler", None) != before:
        if before is None:
            dask.config.config.pop("scheduler", None)
        else:
            dask.config.set(scheduler=before)


REDIS_URL = os.environ.get("XLIBRARY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The real Redis on 127.0.0.1:6379 (database 15, emptied before and after)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}; start redis-server")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@contextlib.contextmanager
def manager_on(
    where: str, config: dict[str, object] | None = None, *, threads: int = 1
) -> Iterator[Any]:
    """A PipelineManager with ``config`` on threads (``where="threads"``), or on a real
    LocalCluster of two worker processes of ``threads`` threads each (``"cluster"``), closed
    after."""
    from xlibrary.pipeline import PipelineManager

    if where == "threads":
        with PipelineManager(config) as manager:
            yield manager
        return
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=threads, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
        PipelineManager(config, client=client) as manager,
    ):
        yield manager


WHERE = pytest.mark.parametrize("where", ["threads", "cluster"])
"""Run a test on threads and on a LocalCluster of worker processes (with :func:`manager_on`)."""


class Calls:
    """Counts calls by name, from any thread (tasks on the threaded backend)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dask_command() -> list[str]:
    """The `dask` CLI of this interpreter's environment."""
    exe = Path(sys.executable).with_name("dask")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("dask")
    if found is None:
        pytest.fail("the `dask` command is not installed; install xlibrary[pipeline]")
    return [found]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@contextlib.contextmanager
def dask_processes(
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    protocol: str = "tcp",
    scheduler_args: Sequence[str] = (),
    worker_args: Sequence[str] = (),
    own_sessions: bool = False,
) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """A real `dask scheduler` and `dask worker` processes on 127.0.0.1, started from the
    command line; yields the address and the worker processes (each in its own process
    group with ``own_sessions``, so a test can kill one outright), and stops them all."""
    port = free_port()
    address = f"{protocol}://127.0.0.1:{port}"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}

    def start(args: Sequence[str], new_session: bool = False) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*dask_command(), *args],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=new_session,
        )

    scheduler = start(
        ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--protocol", protocol,
         "--no-dashboard", *scheduler_args]
    )  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wait_for_port(port, scheduler)
        for i in range(workers):
            procs.append(
                start(
                    [
                        "worker",
                        address,
                        "--nthreads",
                        "2",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        "--name",
                        f"w{i}",
                        *worker_args,
                    ],
                    own_sessions,
                )
            )
        yield address, procs
    finally:
        for proc in [*procs, scheduler]:
            stop(proc)


@pytest.fixture(scope="session")
def dask_scheduler_cli() -> Iterator[str]:
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1; yields the address."""
    with dask_processes() as (address, _):
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address


class RedisServer:
    """A redis-server of a test's own, on a free port of 127.0.0.1 (``pause`` stops it with
    SIGSTOP: it accepts connections and never answers, as a hung server does)."""

    PASSWORD = "hunter2-SECRET"

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"redis://:{self.PASSWORD}@127.0.0.1:{port}/0"

    def pause(self) -> None:
        import signal

        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with a password, stopped (and resumed first) at the end."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed; apt-get install redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--requirepass", RedisServer.PASSWORD],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = RedisServer(proc, port)
    try:
        wait_for_port(port, proc, timeout=20)
        yield server
    finally:
        if proc.poll() is None:
            server.resume()
        stop(proc)
