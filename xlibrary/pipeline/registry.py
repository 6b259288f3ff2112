"""Extension points by name: stream sources and sinks, caches, backends.

Modelled on fsspec's ``register_implementation``: a name maps to a class, or to the dotted path
of one (``"xlibrary.pipeline.stream.kafka:KafkaSource"``) that is imported only when the name
is first used, so an optional dependency costs nothing until then. A missing dependency raises
:class:`~xlibrary.pipeline.errors.MissingExtraError` naming the extra to install; an unknown
name lists the known ones, with the closest first::

    from xlibrary.pipeline.stream import sources

    sources.register("mqtt", "my_package.mqtt:MqttSource")     # by path: imported on first use
    sources.register("mqtt", MqttSource, clobber=True)          # or the class itself
    stream.add_source("readings", {"type": "mqtt", "topic": "sensors"})

Each registry says what it makes (``kind``) and the error it raises (``error``), so a message
reads "unknown stream source type 'kafak'; did you mean 'kafka'?".
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import PipelineError, did_you_mean, missing_extra

__all__ = ["Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry:
    target: str | type
    extra: str | None
    package: str | None


class Registry(Generic[T]):
    """Names of one kind of extension, each bound to a class or to the path of one."""

    def __init__(self, kind: str, *, error: type[PipelineError] = PipelineError) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def register(
        self,
        name: str,
        target: str | type[T],
        *,
        extra: str | None = None,
        package: str | None = None,
        clobber: bool = False,
    ) -> None:
        """Bind ``name`` to ``target``: a class, or ``"package.module:Class"`` imported on
        first use. ``extra`` (and ``package``, the import name it brings) make a failed import
        say ``pip install "xlibrary[extra]"``. A name taken already needs ``clobber=True``."""
        if not isinstance(name, str) or not name:
            raise self.error(f"a {self.kind} needs a name, got {name!r}")
        if isinstance(target, str):
            if ":" not in target:
                raise self.error(
                    f"{self.kind} {name!r}: give the class as 'package.module:Class', "
                    f"got {target!r}"
                )
        elif not isinstance(target, type):
            raise self.error(f"{self.kind} {name!r}: register a class or its path, got {target!r}")
        with self._lock:
            old = self._entries.get(name)
            if old is not None and not clobber and old.target != target:
                raise self.error(
                    f"{self.kind} {name!r} is registered already (to {old.target!r}); pass "
                    "clobber=True to replace it"
                )
            self._entries[name] = _Entry(target, extra, package)

    def get(self, name: str) -> type[T]:
        """The class bound to ``name``, imported now if it was registered by path."""
        entry = self._entries.get(name)
        if entry is None:
            raise self.error(
                f"unknown {self.kind} type {name!r}{did_you_mean(str(name), self._entries)} "
                f"(known: {', '.join(sorted(self._entries))})"
            )
        if isinstance(entry.target, type):
            return entry.target
        module_name, _, attr = entry.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if entry.extra is None:
                raise
            missing = entry.package or exc.name or module_name
            raise missing_extra(missing, entry.extra, f"{self.kind} {name!r}") from exc
        found: type[T] = getattr(module, attr)
        with self._lock:  # imported once: keep the class itself
            if self._entries.get(name) is entry:
                self._entries[name] = _Entry(found, entry.extra, entry.package)
        return found

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"<Registry of {self.kind}: {', '.join(self.names())}>"
