"""A database as the sink of a stream, through SQLAlchemy (``xlibrary[sql]``).

:class:`DatabaseSink` (type ``database``) writes each batch as one transaction of batched
inserts (or upserts), so ``write`` returns only once the batch is committed; the stream commits
the source only then. No value is changed on its way in (see the class).
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import missing_extra
from .base import StreamError, import_extra
from .config import SinkConfig, as_config

__all__ = ["DatabaseSink", "DatabaseSinkConfig"]

logger = logging.getLogger("xlibrary.pipeline.stream")


def _engine_url(url: str) -> str:
    """``postgresql://`` means psycopg (3) here: SQLAlchemy's default driver is psycopg2."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@dataclass(frozen=True)
class DatabaseSinkConfig(SinkConfig):
    """Type ``database``: ``connection`` (the URL, required), ``table`` (default: the sink's
    name), ``schema`` (``{"column": "integer" | "float" | "text" | "boolean" | "json" |
    "timestamp"}``; default: inferred from the first batch), ``upsert_key`` (a column or list
    of columns: rows with the same key replace each other, so a batch written twice leaves no
    duplicate)."""

    connection: str = field(metadata={"doc": "a database URL", "secret": True})
    table: str | None = None
    schema: dict[str, str] | None = None
    upsert_key: tuple[str, ...] = ()


class DatabaseSink:
    """Rows into a table through SQLAlchemy: ``postgresql://...``, ``sqlite:///...``, any URL.

    Config: :class:`DatabaseSinkConfig`. Each batch is one transaction of batched inserts.

    No value is changed on its way in: each batch is checked against the table's columns
    first. A float for an integer column that was not declared in ``schema`` (one inferred from
    an earlier batch) widens the column to ``DOUBLE PRECISION`` in the batch's transaction
    (PostgreSQL; SQLite keeps the float as it is); any other value the column would round,
    parse or convert (``"12"`` for a number, ``5`` for text, ``1`` for a boolean) fails the
    batch, uncommitted, with a :class:`StreamError` naming the table, column, value and types.
    """

    config_type = DatabaseSinkConfig

    def __init__(self, name: str, config: DatabaseSinkConfig | Mapping[str, Any]) -> None:
        config = as_config(DatabaseSinkConfig, name, config)
        self.name = name
        self.url = config.connection
        self.table_name: str = config.table or name
        self.schema: dict[str, str] | None = config.schema
        self.upsert_key: list[str] = list(config.upsert_key)
        self._engine: Any = None
        self._table: Any = None
        self._kinds: dict[str, str] = {}
        """The checked columns of the table and their kinds (integer, float, text, boolean)."""

    def open(self) -> None:
        sqlalchemy = import_extra(
            "sqlalchemy", package="sqlalchemy", extra="sql", feature="database sinks"
        )
        try:
            self._engine = sqlalchemy.create_engine(_engine_url(self.url))
        except ImportError as exc:  # the URL's driver is missing
            driver = str(exc.name or "the database driver")
            if driver.startswith("psycopg"):  # PostgreSQL's driver comes with the sql extra
                raise missing_extra("psycopg", "sql", "PostgreSQL sinks") from exc
            raise StreamError(
                f"sink {self.name!r}: the driver of {self.url.split('://')[0]!r} is not "
                f"installed ({driver}); pip install {driver}"
            ) from exc
        if self.schema is not None:
            self._ensure_table(self.schema)

    def _ensure_table(self, schema: Mapping[str, str]) -> None:
        import sqlalchemy as sa

        metadata = sa.MetaData()
        columns = [
            sa.Column(column, _sql_type(kind, self._engine.dialect.name),
                      primary_key=column in self.upsert_key)
            for column, kind in schema.items()
        ]  # fmt: skip
        missing = [k for k in self.upsert_key if k not in schema]
        if missing:
            raise StreamError(f"sink {self.name!r}: upsert_key {missing} not among the columns")
        self._table = sa.Table(self.table_name, metadata, *columns)
        metadata.create_all(self._engine)
        self._use(sa.Table(self.table_name, sa.MetaData(), autoload_with=self._engine))

    def _use(self, table: Any) -> None:
        self._table = table
        kinds = {c.name: _column_kind(c.type) for c in table.columns}
        self._kinds = {name: kind for name, kind in kinds.items() if kind is not None}

    def write(self, records: list[Any]) -> None:
        if not records:
            return
        rows = [_row(self.name, record) for record in records]
        if self._table is None:
            self._ensure_table(self.schema or _infer_schema(rows))
        import sqlalchemy as sa

        known = {c.name for c in self._table.columns}
        extra = sorted({key for row in rows for key in row} - known)
        if extra:
            raise StreamError(
                f"sink {self.name!r}: records have columns {extra} that table "
                f"{self.table_name!r} does not; declare them in 'schema'"
            )
        widen = self._check(rows)
        with self._engine.begin() as connection:  # one transaction: all of the batch or none
            table = self._widen(connection, widen) if widen else self._table
            if self.upsert_key:
                connection.execute(*self._upsert(table, rows))
            else:
                columns = [c.name for c in table.columns]
                connection.execute(
                    sa.insert(table), [{c: row.get(c) for c in columns} for row in rows]
                )
        if widen:
            self._use(table)

    # -- no value changed on its way in -------------------------------------------------------
    def _check(self, rows: list[dict[str, Any]]) -> list[str]:
        """The integer columns to widen to floats for ``rows``; raises :class:`StreamError` on a
        value that its column would change (round, parse or convert)."""
        widen = []
        for column, kind in self._kinds.items():
            if self._check_column(rows, column, kind) and self._dialect == "postgresql":
                self._check_column(rows, column, "float")  # its whole numbers, as floats
                widen.append(column)  # (SQLite's INTEGER affinity keeps a REAL as it is)
        return widen

    def _check_column(self, rows: list[dict[str, Any]], column: str, kind: str) -> bool:
        """True when ``column`` (of ``kind``) needs widening to float to hold the rows' values."""
        exact = _EXACT[kind]
        widenable = column not in (self.schema or {}) and self._dialect in ("postgresql", "sqlite")
        widen = False
        for row in rows:
            value = row.get(column)
            if value is None or type(value) is exact:
                continue
            fit = _fit(kind, value)
            if fit == "widen" and widenable:
                widen = True
            elif fit != "ok":
                raise StreamError(self._misfit(column, kind, value, fit))
        return widen

    def _misfit(self, column: str, kind: str, value: Any, fit: str) -> str:
        sql_type = self._table.columns[column].type
        declared = column in (self.schema or {})
        what = f"declared {kind!r} in the sink's 'schema'" if declared else f"{kind} ({sql_type})"
        if kind != self._kinds[column]:  # checked as it would be once widened
            what = f"{self._kinds[column]} ({sql_type}) and gets floats in this batch"
        if fit == "inexact":
            fix = "a floating-point column would round it; keep such numbers in an integer column"
        elif declared and fit == "widen":
            fix = "declare it 'float' to keep fractions"
        elif fit == "widen":
            fix = (
                f"the sink widens integer columns to floats on PostgreSQL and SQLite only; "
                f"alter the column to a floating-point type in {self._dialect}"
            )
        else:
            fix = f"convert the value to {kind} in a stage before the sink"
        return (
            f"sink {self.name!r}: column {column!r} of table {self.table_name!r} is {what}, but "
            f"a record has {value!r:.80} ({type(value).__name__}): {fix}"
        )

    def _widen(self, connection: Any, columns: list[str]) -> Any:
        """``ALTER`` the integer ``columns`` to ``DOUBLE PRECISION`` inside the batch's
        transaction (a failed batch takes it back); the table as it then is."""
        import sqlalchemy as sa

        quote = self._engine.dialect.identifier_preparer
        table = quote.format_table(self._table)
        # no writer may add a value between the check and the ALTER
        connection.execute(sa.text(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))
        for column in columns:
            name = quote.quote(column)
            big = connection.execute(
                sa.text(f"SELECT {name} FROM {table} WHERE {name} > {_EXACT_INT} "
                        f"OR {name} < -{_EXACT_INT} LIMIT 1")
            ).first()  # fmt: skip
            if big is not None:
                raise StreamError(
                    f"sink {self.name!r}: column {column!r} of table {self.table_name!r} gets "
                    f"floats, but a DOUBLE PRECISION column would round its integer {big[0]}; "
                    "alter it to NUMERIC yourself, or send whole numbers as ints"
                )
            connection.execute(
                sa.text(f"ALTER TABLE {table} ALTER COLUMN {name} TYPE DOUBLE PRECISION")
            )
            logger.info(
                "sink %r: column %r of table %r widened from integer to DOUBLE PRECISION "
                "(a record has a float)",
                self.name,
                column,
                self.table_name,
            )
        return sa.Table(self.table_name, sa.MetaData(), autoload_with=connection)

    @property
    def _dialect(self) -> str:
        return str(self._engine.dialect.name)

    def _upsert(self, table: Any, rows: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
        """The upsert statement and its rows, run as one executemany: SQLAlchemy sends them in
        as many multi-row statements as the driver's parameter limit allows."""
        dialect = self._engine.dialect.name
        if dialect not in ("postgresql", "sqlite"):
            raise StreamError(f"sink {self.name!r}: upsert_key needs PostgreSQL or SQLite")
        from sqlalchemy.dialects import postgresql, sqlite

        insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # one row per key: the last one wins, as it would have row by row
        latest = {tuple(row.get(k) for k in self.upsert_key): row for row in rows}
        columns = [c.name for c in table.columns]
        values = [{c: row.get(c) for c in columns} for row in latest.values()]
        statement = insert(table)
        update = {c: statement.excluded[c] for c in columns if c not in self.upsert_key}
        if not update:
            return statement.on_conflict_do_nothing(index_elements=self.upsert_key), values
        return statement.on_conflict_do_update(index_elements=self.upsert_key, set_=update), values

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _row(sink: str, record: Any) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise StreamError(
            f"sink {sink!r} writes rows: records must be dicts of column values, got "
            f"{type(record).__name__}"
        )
    return dict(record)


def _infer_schema(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    schema: dict[str, str] = {}
    for row in rows:
        for column, value in row.items():
            if value is None:
                continue
            kind = _kind_of(value)
            # the first value's kind; a float after ints makes a float column, not a BIGINT
            if column not in schema or (schema[column] == "integer" and kind == "float"):
                schema[column] = kind
    for row in rows:  # columns only ever None
        for column in row:
            schema.setdefault(column, "text")
    return schema


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dt.datetime):
        return "timestamp"
    if isinstance(value, dict | list):
        return "json"
    return "text"


_EXACT: dict[str, type] = {"integer": int, "float": float, "text": str, "boolean": bool}
"""Per column kind, the type whose values always fit as they are (checked first: fast)."""
_EXACT_INT = 2**53
"""Integers up to this size are exact as floats (DOUBLE PRECISION)."""


def _column_kind(sql_type: Any) -> str | None:
    """The kind of a table's column whose values the sink checks; None: the database checks."""
    import sqlalchemy as sa

    for kind, base in (("boolean", sa.Boolean), ("integer", sa.Integer), ("float", sa.Float),
                       ("text", sa.String)):  # fmt: skip
        if isinstance(sql_type, base):
            return kind
    return None


def _fit(kind: str, value: Any) -> str:
    """How ``value`` fits a column of ``kind``: ``ok`` as it is; ``widen`` (a float for an
    integer column); ``inexact`` (a float column would round it); ``no``."""
    if kind == "text":
        return "ok" if isinstance(value, str) else "no"
    is_bool = isinstance(value, bool) or type(value).__name__ in ("bool_", "bool")
    if kind == "boolean" or is_bool:
        return "ok" if kind == "boolean" and is_bool else "no"
    number = _number(value)
    if number is None:
        return "no"
    if kind == "integer":
        return "ok" if number == "integer" else "widen"
    try:  # a float column: exact as a float?
        return "ok" if number == "float" or float(value) == value else "inexact"
    except OverflowError:
        return "inexact"


def _number(value: Any) -> str | None:
    """``integer`` for a whole number (int, NumPy integer, whole Decimal), ``float`` for a
    real one (float, NumPy float), ``decimal`` for a fractional Decimal; None otherwise."""
    if isinstance(value, numbers.Integral):
        return "integer"
    if isinstance(value, numbers.Real):
        return "float"
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return "integer" if value == value.to_integral_value() else "decimal"
    return None


def _sql_type(kind: str, dialect: str) -> Any:
    import sqlalchemy as sa

    types: dict[str, Any] = {
        "integer": sa.BigInteger(),
        "float": sa.Float(),
        "text": sa.Text(),
        "boolean": sa.Boolean(),
        "timestamp": sa.DateTime(timezone=True),
        "json": sa.JSON(),
    }
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        types["json"] = JSONB()
    if kind not in types:
        raise StreamError(f"unknown column type {kind!r}; use one of {', '.join(types)}")
    return types[kind]
