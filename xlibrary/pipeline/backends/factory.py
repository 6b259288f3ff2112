"""The backends one manager runs on: chosen from its settings, started on first use, closed
together.

``scheduler`` names the backend (:data:`~xlibrary.pipeline.extensions.backends`: ``threads``,
the embedded default, or ``distributed``); without it, runs go to ``dask.distributed`` when the
settings name a cluster (``distributed_mode``, ``scheduler_address``, ``cluster_mode``,
``auto_scaling``), a ``Client`` was handed in, or a dashboard is wanted; else, as
``dask.compute`` does, to the user's default ``Client`` when one is open in this process
(``distributed.default_client()``; looked up at each run, and only when ``distributed`` is
imported already); and to threads otherwise (``scheduler: "threads"`` keeps them whatever
clients are open). On ``distributed``, the cluster is the user's ``Client`` (handed in, or the
default one: never closed by us), the scheduler at ``scheduler_address``, or one this manager
starts (``cluster_mode``, :mod:`.clusters`) and closes.

A backend class is registered by name with a ``from_settings(settings, *, client,
on_connect)`` class method (see :mod:`~xlibrary.pipeline.extensions`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigError, PipelineError
from ..extensions import backends
from ..settings import Settings
from . import Backend

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["Backends", "default_client"]

logger = logging.getLogger("xlibrary.pipeline")


class Backends:
    """The backends of one manager, by name, each started once, on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: Client | None = None,
        on_connect: Callable[[Client], None] | None = None,
        dashboard: Callable[[], bool] = lambda: False,
    ) -> None:
        if client is not None and settings.scheduler_address is not None:
            raise ConfigError(
                "both client= and scheduler_address are set; pass one: the Client already "
                "knows its scheduler"
            )
        self.settings = settings
        self.user_client = client
        self._on_connect = on_connect
        self._dashboard = dashboard
        self._started: dict[str, Backend] = {}
        self._default_client: Client | None = None
        """The user's default Client the ``distributed`` backend was started on, if so."""
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_all, self._started)

    def describe(self) -> str:
        """Where runs go, in a few words (the manager's repr)."""
        return (
            self.settings.scheduler_address
            or ("user client" if self.user_client is not None else None)
            or ("local cluster" if self.settings.distributed_mode else None)
            or ("default client" if self.default_name() == "distributed" else "local threads")
        )

    # -- choosing -----------------------------------------------------------------------
    def default_name(self) -> str:
        """The backend runs go to when they do not ask for one (see the module docstring)."""
        if self.settings.scheduler is not None:
            return self.settings.scheduler
        distributed = (
            self.user_client is not None or self.settings.is_distributed or self._dashboard()
        )
        return "distributed" if distributed or self._users_default() is not None else "threads"

    def _users_default(self) -> Client | None:
        """The user's default Client, when the settings leave the cluster to it."""
        if self.user_client is not None or self.settings.is_distributed:
            return None
        return default_client()

    def get(self, name: str | None = None) -> Backend:
        """The backend ``name`` (default: :meth:`default_name`), started on first use."""
        name = name or self.default_name()
        with self._lock:
            if self._closed:
                raise PipelineError("this PipelineManager is closed; create a new one to run")
            backend = self._started.get(name)
            client = self.user_client
            if name == "distributed" and client is None:
                client = self._users_default()
                used = self._default_client
                if backend is not None and used is not None and client is not used:
                    # the default Client it ran on was closed, or another one made default
                    del self._started[name]
                    backend.close()  # closes nothing of the user's
                    backend = None
                if backend is not None:
                    client = used
                self._default_client = client
            if backend is None:
                backend = backends.get(name).from_settings(
                    self.settings, client=client, on_connect=self._on_connect
                )
                with contextlib.suppress(AttributeError):  # a read-only name is its own
                    backend.name = name  # runs say the name it was registered and asked by
                try:
                    backend.start()
                except BaseException:
                    backend.close()
                    raise
                self._started[name] = backend
            return backend

    def started(self, name: str) -> Backend | None:
        """The backend ``name`` if it has started, without starting it."""
        return self._started.get(name)

    # -- what a cluster offers ------------------------------------------------------------
    def offered(self, backend: Backend) -> tuple[list[dict[str, float]], str] | None:
        """What each worker of ``backend``'s cluster offers to task resource requests, and the
        cluster's name for messages; ``None`` when it has no workers yet (or the backend
        cannot tell)."""
        offered = getattr(backend, "offered", None)
        return None if offered is None else offered(self.settings)

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Close what was started: thread pools, clusters and clients we made (a ``Client``
        handed in stays open). Idempotent."""
        with self._lock:
            self._closed = True
        self._finalizer()


def _close_all(started: dict[str, Backend]) -> None:
    while started:
        _, backend = started.popitem()
        try:
            backend.close()
        except Exception:  # closing must not mask what the caller is doing
            logger.debug("error while closing the %s backend", backend.name, exc_info=True)


def default_client() -> Client | None:
    """The user's default ``dask.distributed`` Client in this process (the one ``dask.compute``
    uses), or ``None``. Never imports distributed to find out: without it imported, no Client
    can be open."""
    module = sys.modules.get("distributed.client")
    if module is None:
        return None
    try:
        client: Client = module.default_client()
    except ValueError:  # no client has started
        return None
    if client.status not in ("running", "newly-created") or client.asynchronous:
        return None  # closing, or one for an event loop: not for a blocking run
    return client
