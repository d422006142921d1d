"""SQL helpers that differ between PostgreSQL and SQLite: insert-or-ignore / upsert, and `IN` a long list.

Services call these instead of picking a dialect themselves, so the same statement runs in production
(PostgreSQL) and in the default install and tests (SQLite).
"""

from __future__ import annotations

from sqlalchemy import Integer, any_, bindparam


def _insert_for(dialect_name: str):
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def dialect_insert(session_or_connection, table):
    """An INSERT for the bind's dialect, one that has `on_conflict_do_nothing` / `on_conflict_do_update`
    (`table` is a model class or a Table)."""
    bind = session_or_connection.get_bind() if hasattr(session_or_connection, "get_bind") \
        else session_or_connection
    return _insert_for(bind.dialect.name)(table)


def upsert_from_select(conn, table, columns: list[str], query, keys: list[str],
                       update_columns: list[str]) -> None:
    """INSERT … SELECT … ON CONFLICT (keys) DO UPDATE, on PostgreSQL and SQLite alike."""
    statement = dialect_insert(conn, table).from_select(columns, query)
    statement = statement.on_conflict_do_update(
        index_elements=keys, set_={c: getattr(statement.excluded, c) for c in update_columns})
    conn.execute(statement)


def id_in(column, ids: list[int], dialect: str):
    """`column IN ids`: one array parameter on PostgreSQL (a long IN list is parsed per statement)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam("ids", ids, type_=ARRAY(Integer)))
    return column.in_(ids)
