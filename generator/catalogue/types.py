"""The data types of the method catalogue: typed parameters and one entry per method.

Kept apart from the entries (as timm keeps its pretrained-config dataclass apart from the
model factories), so the config validator, the artifact keys, ``modelcard list`` and the pages
all read the same frozen records. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

#: Parameter kinds. ``pixels`` is "a whole number of pixels, or a fraction (0 < f < 1) of the
#: image side", the convention of occlusion windows and selectivity patches; ``floats`` is a
#: non-empty list of numbers.
KINDS = ("int", "float", "bool", "str", "pixels", "floats")


@dataclass(frozen=True)
class ParamProblem:
    """One invalid parameter: ``param`` is its name (the config field that is wrong)."""

    param: str
    message: str


class ParamError(ValueError):
    """Parameters that do not fit a method; ``problems`` lists each one."""

    def __init__(self, method: str, problems: List[ParamProblem]):
        self.method, self.problems = method, problems
        super().__init__("; ".join(f"{method}.{p.param}: {p.message}" if p.param else p.message for p in problems))


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but ``steps: true`` is a mistake, not 1 step
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


@dataclass(frozen=True)
class Param:
    """A typed method parameter with its default.

    ``choices``: the allowed strings of a ``str`` parameter; with ``or_number`` a number is
    accepted as well (a baseline can be a named image or a constant model input). ``minimum``
    and ``maximum`` bound numbers (each item of ``floats``); ``open_minimum`` excludes the
    minimum itself. ``nullable``: ``None`` means "choose for me" (a CAM layer from the spec).
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: Tuple[str, ...] = ()
    or_number: bool = False
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    open_minimum: bool = False
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name!r}: unknown kind {self.kind!r} (known: {', '.join(KINDS)})")
        if self.default is not None or not self.nullable:
            value, problem = self.normalise(self.default)
            if problem:
                raise ValueError(f"parameter {self.name!r}: its default {self.default!r} is invalid: {problem}")

    # ------------------------------------------------------------------ description
    def type_text(self) -> str:
        """What the parameter accepts, in words (for messages and listings)."""
        if self.kind == "str" and self.choices:
            text = " | ".join(self.choices) + (" | a number" if self.or_number else "")
        elif self.kind == "pixels":
            text = "pixels (int >= 1) or a fraction of the image side (0 < f < 1)"
        elif self.kind == "floats":
            text = "list of numbers"
        else:
            text = {"int": "whole number", "float": "number", "bool": "true | false", "str": "text"}[self.kind]
        bounds = self._bounds_text()
        return text + (f" {bounds}" if bounds else "") + (" or null" if self.nullable else "")

    def _bounds_text(self) -> str:
        if self.kind not in ("int", "float", "floats"):
            return ""
        low = "" if self.minimum is None else f"{'>' if self.open_minimum else '>='} {self.minimum:g}"
        high = "" if self.maximum is None else f"<= {self.maximum:g}"
        return ", ".join(part for part in (low, high) if part)

    # ------------------------------------------------------------------ checking
    def _in_bounds(self, number: float) -> bool:
        if self.minimum is not None and (number <= self.minimum if self.open_minimum else number < self.minimum):
            return False
        return self.maximum is None or number <= self.maximum

    def normalise(self, value: Any) -> Tuple[Any, Optional[str]]:
        """``(normalised value, None)``, or ``(None, why it is invalid)``.

        Normalised means one spelling per meaning, so equal settings hash to equal keys:
        ``50.0`` steps becomes ``50``, a float parameter given as ``1`` becomes ``1.0``, tuples
        become lists, and an integral pixel count given as a float becomes an int.
        """
        if value is None:
            return (None, None) if self.nullable else (None, f"expected {self.type_text()}, got null")
        got = f"got {value!r} ({_type_name(value)})"
        if self.kind == "bool":
            return (value, None) if isinstance(value, bool) else (None, f"expected true or false, {got}")
        if self.kind == "str":
            if _is_number(value) and self.or_number:
                return self._number(float(value), got)
            if not isinstance(value, str) or not value:
                return None, f"expected {self.type_text()}, {got}"
            if self.choices and value not in self.choices:
                close = difflib.get_close_matches(value, self.choices, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                return None, f"{value!r} is not one of {', '.join(self.choices)}{hint}"
            return value, None
        if self.kind == "floats":
            if not isinstance(value, (list, tuple)) or not value:
                return None, f"expected a non-empty {self.type_text()}, {got}"
            items = []
            for item in value:
                if not _is_number(item):
                    return None, f"expected a {self.type_text()}, item {item!r} ({_type_name(item)}) is not a number"
                number, problem = self._number(float(item), f"item {item!r}")
                if problem:
                    return None, problem
                items.append(number)
            return items, None
        if not _is_number(value):
            return None, f"expected {self.type_text()}, {got}"
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                return None, f"expected {self.type_text()}, {got}"
            return self._number(int(value), got)
        if self.kind == "float":
            return self._number(float(value), got)
        # pixels: a count of pixels, or a fraction of the image side
        if 0 < value < 1 and isinstance(value, float):
            return value, None
        if value >= 1 and float(value).is_integer():
            return int(value), None
        return None, f"expected {self.type_text()}, {got}"

    def _number(self, number: Any, got: str) -> Tuple[Any, Optional[str]]:
        if isinstance(number, float) and not math.isfinite(number):
            return None, f"expected a finite number, {got}"
        if not self._in_bounds(number):
            return None, f"expected {self.type_text()}, {got}"
        return number, None


@dataclass(frozen=True)
class MethodEntry:
    """Everything the project says about one method, torch-free.

    ``family``: ``attribution``, ``evaluation``, ``data``, ``features`` or ``blocks``.
    ``summary``: one line for ``modelcard list methods``. ``citation``: the paper(s).
    ``formula``: LaTeX, shown as MathML. ``read``: how to read the result. ``limits``: what it
    cannot tell. ``version``: bump it when a change alters results, so cached artifacts are
    recomputed. ``params``: the method's own parameters; ``common``: the family's parameters
    shared by every method (a method's own parameter of the same name overrides its default).
    ``columns``: per-image numbers shown in tables (keys of the family's column table).
    ``section``: where the method's settings live in the config, for methods set by a section
    (their types are the section's pydantic model) rather than by ``params``.
    """

    name: str
    family: str
    title: str
    summary: str
    citation: str
    version: str = "1"
    formula: str = ""
    read: str = ""
    limits: str = ""
    params: Tuple[Param, ...] = ()
    common: Tuple[Param, ...] = ()
    columns: Tuple[str, ...] = ()
    section: str = ""

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: a parameter is declared twice: {names}")

    @property
    def all_params(self) -> Dict[str, Param]:
        """Every parameter the method takes, by name (its own override the family's)."""
        merged = {p.name: p for p in self.common}
        merged.update({p.name: p for p in self.params})
        return merged

    @property
    def defaults(self) -> Dict[str, Any]:
        """Defaults of the method's own parameters (a fresh dict; tuples stay tuples)."""
        return {p.name: p.default for p in self.params}

    @property
    def common_defaults(self) -> Dict[str, Any]:
        """Defaults of the family's shared parameters."""
        return {p.name: p.default for p in self.common}

    def check(self, params: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[ParamProblem]]:
        """``(normalised given parameters, problems)``: unknown names (with close matches) and
        values of the wrong type or out of range. Defaults are not merged here."""
        known = self.all_params
        out: Dict[str, Any] = {}
        problems: List[ParamProblem] = []
        for name in sorted(params, key=str):
            param = known.get(name) if isinstance(name, str) else None
            if param is None:
                close = difflib.get_close_matches(str(name), list(known), n=2, cutoff=0.6)
                hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                problems.append(ParamProblem(str(name), f"unknown parameter(s) [{str(name)!r}] for {self.name}{hint} "
                                                        f"(known: {', '.join(sorted(known)) or 'none'})"))
                continue
            value, problem = param.normalise(params[name])
            if problem:
                problems.append(ParamProblem(name, problem))
            else:
                out[name] = value
        return out, problems

    def effective(self, params: Mapping[str, Any]) -> Dict[str, Any]:
        """Defaults merged with ``params``, normalised, keys sorted; :class:`ParamError` if invalid."""
        given, problems = self.check(params)
        if problems:
            raise ParamError(self.name, problems)
        merged: Dict[str, Any] = {}
        for name, param in self.all_params.items():
            if name in given:
                merged[name] = given[name]
            else:
                merged[name] = param.normalise(param.default)[0] if param.default is not None else None
        return {k: merged[k] for k in sorted(merged)}
