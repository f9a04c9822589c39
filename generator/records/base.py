"""The base of every typed record: strict parsing, exact round trips, errors that name the field.

Records are pydantic models in strict mode: a value of the wrong type is an error, never
silently converted (``"3"`` is not an int, ``True`` is not a number), and a field the schema
does not know is an error too, so a renamed field shows up as one missing and one unknown
field rather than as a value quietly dropped. Numbers that may be written as ints or floats
keep the type they were written with (:data:`Number`), so a record read back and written again
is byte-identical and pages print the same digits as before.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

__all__ = ["Number", "Record", "RecordError", "Part", "RECORD_TYPES", "register", "format_problems"]


def _number(value: Any) -> Any:
    # bool is an int subclass in Python; in a record it is always a mistake where a number belongs.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r:.60}")
    return value


#: A JSON number kept exactly as written: an int stays an int, a float a float.
Number = Annotated[Any, BeforeValidator(_number)]


class RecordError(ValueError):
    """A record that does not fit the schema of its kind.

    ``str()`` names the kind (or the artifact) and each field at fault, e.g.
    ``attribution record: field 'target_names': missing`` (several problems: one field a line
    under ``<where>: N problems:``). ``field`` is the first problem's field path
    (``shown[0].top[1].probability``), ``kind`` the artifact kind, ``problems`` all of them.
    """

    def __init__(self, message: str, *, kind: str = "", field: str = "", problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field
        self.problems = list(problems)


class Part(BaseModel):
    """A nested part of a record: strict, closed and read-only like the records themselves."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True,
                              protected_namespaces=())


class Record(Part):
    """One artifact kind's record as the stage writes it (``record.json``).

    ``kind``, ``key``, ``files`` and ``integrity`` are added by the store when the artifact is
    written, so a record a stage has just built (before storing) has none of them.
    """

    KIND: ClassVar[str] = ""
    #: Version of this kind's record layout; part of every key of the kind (a changed layout
    #: recomputes its artifacts) and recorded in the manifest.
    SCHEMA: ClassVar[str] = "1"

    kind: Optional[str] = None
    key: Optional[str] = None
    files: Dict[str, str] = Field(default_factory=dict)
    integrity: Dict[str, Dict[str, Any]] = Field(default_factory=dict)

    def to_record(self) -> Dict[str, Any]:
        """The JSON object this record was parsed from (or the one a stage would store):
        fields that were absent stay absent, ``global`` keeps its JSON name."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


R = TypeVar("R", bound=Record)

#: kind -> record class, filled by :func:`register`.
RECORD_TYPES: Dict[str, Type[Record]] = {}


def register(kind: str, schema: str = "1") -> Callable[[Type[R]], Type[R]]:
    """Class decorator: ``cls`` is the record of artifact kind ``kind`` at layout ``schema``."""

    def wrap(cls: Type[R]) -> Type[R]:
        if kind in RECORD_TYPES:
            raise ValueError(f"record kind {kind!r} is registered twice "
                             f"({RECORD_TYPES[kind].__name__}, {cls.__name__})")
        cls.KIND = kind
        cls.SCHEMA = schema
        RECORD_TYPES[kind] = cls
        return cls

    return wrap


# --- errors ------------------------------------------------------------------------------------

def _path(loc: Tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(the whole record)"


def _problem(error: Mapping[str, Any]) -> Tuple[str, str]:
    """(field path, what is wrong) of one pydantic error, in words a maintainer acts on."""
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    if kind == "missing":
        return _path(loc), "missing"
    if kind == "extra_forbidden":
        return _path(loc), "not a field of this kind (renamed, or added without updating generator.records?)"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    got = error.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        message = f"{message} (got {type(got).__name__} {json.dumps(got, default=str)[:60]})"
    return _path(loc), message


def format_problems(where: str, exc: ValidationError, *, kind: str, hint: str = "", limit: int = 6) -> RecordError:
    """A :class:`RecordError` for ``exc``. One problem reads ``<where>: field '<path>': <problem>``
    on one line; several are listed under ``<where>: N problems:``, one field per line."""
    problems = [_problem(e) for e in exc.errors(include_url=False)]
    end = f". {hint}" if hint else ""
    if len(problems) == 1:
        (path, what), = problems
        message = f"{where}: field {path!r}: {what}{end}"
    else:
        lines = [f"{where}: {len(problems)} problems:"]
        lines += [f"  field {path!r}: {what}" for path, what in problems[:limit]]
        if len(problems) > limit:
            lines.append(f"  … and {len(problems) - limit} more")
        if hint:
            lines.append(hint)
        message = "\n".join(lines)
    return RecordError(message, kind=kind, field=problems[0][0] if problems else "",
                       problems=[f"{p}: {w}" for p, w in problems])
