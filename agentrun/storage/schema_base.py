"""What every table module of the store builds on: the one `metadata` the tables join (its
naming convention), the JSON payload column type (`Json`: JSONB on PostgreSQL, JSON text in a
TEXT column on SQLite, `JsonText`) and the encoders that write payloads as text (`json_text`,
`jsonb_dumps`), one place for the few modules that encode rows themselves (sqlite_turns.py,
sqlite_instances.py, pg_turns.py...) to share with SQLAlchemy's binds.
"""

from __future__ import annotations

import decimal
import json
import json.encoder
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB


class JsonText(sa.TypeDecorator[Any]):
    """A JSON payload as its json.dumps text in a column SQLite gives TEXT affinity.

    A column declared `JSON` gets NUMERIC affinity on SQLite, so a payload that is a bare
    number was converted by SQLite's own parser as it was stored: 2.0662443630870376e-307
    came back as ...372e-307, an int beyond int64 as a float, 1.0 and -0.0 as ints. TEXT
    affinity stores the text as written; every payload comes back as json.loads reads it.
    (Migration 0007 moved existing databases over, keeping the numbers already converted.)
    """

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else json_text(value)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else json.loads(value)


# Python None is stored as SQL NULL, so "no output" and "absent" are one thing in queries.
Json = (
    sa.JSON(none_as_null=True)
    .with_variant(JSONB(none_as_null=True), "postgresql")
    .with_variant(JsonText(), "sqlite")
)

# Explicit names keep Alembic's autogenerate comparison and future migrations stable.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


# Payload encoding -----------------------------------------------------------------
def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json.dumps with its defaults ends in this C encoder, but builds it anew at every call
# (dumps -> encode -> iterencode -> c_make_encoder): three frames and a constructor, about
# three quarters of the call for a small payload (a step writes several). Built once here
# with the same arguments, without the cycle check's memo (`markers`): a memo shared by every
# call would outlive a failed call; a cyclic value fails all the same (RecursionError, where
# json.dumps raises ValueError).
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_ENCODE: Callable[[Any, int], Any] | None = (
    None
    if _C_ENCODER is None
    else _C_ENCODER(
        None,
        _not_serializable,
        json.encoder.encode_basestring_ascii,
        None,
        ": ",
        ", ",
        False,
        False,
        True,
    )
)


def json_text(value: Any) -> str:
    """`json.dumps(value)`: the same text (its defaults: ASCII, NaN allowed, keys in order),
    through one C encoder built once (`_ENCODE`)."""
    if _ENCODE is None:
        return json.dumps(value)
    return "".join(_ENCODE(value, 0))


def jsonb_dumps(value: Any) -> str:
    """json.dumps, except that floats written with a positive exponent keep a decimal point.

    JSONB keeps numbers as `numeric`, which prints 1.5e+16 back as 15000000000000000: an int
    to json.loads. A float turning into an int on a round trip would change how expressions
    (CEL keeps int and double apart) see a node's output after a restart. (`numeric` has no
    negative zero either: -0.0 comes back as 0.0, still a float; memory and SQLite keep it.)
    """
    text = json_text(value)
    if "e+" not in text:  # the common case: no such float (or only a string containing e+)
        return text
    # json's pure-Python encoder takes a float formatter (the C one does not); a fresh one
    # per call, so that its cycle-detection memo never outlives the call.
    encode = json.encoder._make_iterencode(  # type: ignore[attr-defined]
        {},
        _not_serializable,
        json.encoder.encode_basestring_ascii,
        None,
        _float_with_point,
        ": ",
        ", ",
        False,
        False,
        False,
    )
    return "".join(encode(value, 0))


def _float_with_point(value: float) -> str:
    text = float.__repr__(value)
    if "e+" in text:
        return format(decimal.Decimal(text), "f") + ".0"
    if text in ("nan", "inf", "-inf"):  # as json.dumps writes them; PostgreSQL refuses them
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[text]
    return text
