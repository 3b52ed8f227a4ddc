"""The replies ``nonoctl``'s lean client reads by hand, checked against ``nonod.protocol``'s
own types, with the standard library only.

The full client decodes every reply with msgspec into ``nonod.protocol``'s Structs; the lean
client (``nonoctl._lean``: an attached ``nonoctl launch``, ``nonoctl ps``) reads a few replies
(``welcome``, ``launched``, ``exited``, ``sessions``) with the interpreter's C JSON scanner,
since importing msgspec and the protocol costs more than the whole command. It must not
accept a reply the full decoder would refuse, in the fields it does not use as in those it
does. So it checks the whole reply against a *shape*: the protocol's type, as
``msgspec.inspect`` describes it, written out as plain tuples in ``nonod._reply_shapes``
(:func:`generate` writes it; ``tests/cli/test_lean_shapes.py`` fails when the protocol's
types and the file differ). One definition, the protocol's, for both decoders.

:func:`fits` is never more lenient than msgspec: what it cannot check exactly (a string
pattern, a float bound, a ``multiple_of``, a type it does not know) does not fit, and the
lean client then hands the reply to the full decoder, which accepts it or says why not. A
datetime fits only in RFC 3339's plain form (``2026-12-06T09:00:00.5+01:00``), a subset of
what msgspec reads.

A shape is a tuple whose first item is its kind: ``("str", min, max)``, ``("int", min, max)``
(None: no bound), ``("float",)``, ``("bool",)``, ``("null",)``, ``("datetime", tz)`` (tz
None: either; True: an offset required; False: none allowed), ``("literal", values)``,
``("seq", item, min, max)``, ``("union", members)``, ``("struct", name)`` (its fields in
``STRUCTS[name]``: tag field, tag, unknown fields forbidden, ``(name, required, shape)``...)
and ``("never",)``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no ``typing`` at run time: the lean client does not pay for it
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Final

    Shape = tuple[Any, ...]
    #: (tag field, tag, unknown fields forbidden, the fields)
    StructShape = tuple[str | None, str | int | None, bool,
                        tuple[tuple[str, bool, Shape], ...]]

#: The replies the lean client reads by hand (``nonod._reply_shapes`` holds their shapes).
READ_BY_HAND: Final = ("Welcome", "Launched", "Exited", "SessionList")

_DIGITS: Final = frozenset("0123456789")
#: An int in a float field fits below this (a double's range ends just under 2 ** 1024; the
#: scanner reads ``1e400`` as infinity, which fits no more than it decodes).
_INT_AS_FLOAT: Final = 2 ** 1023


def fits(value: object, name: str, structs: Mapping[str, StructShape] | None = None) -> bool:
    """Whether the JSON ``value`` (as the C scanner reads it) decodes as the protocol's
    ``name`` (one of :data:`READ_BY_HAND`), as msgspec would decode it."""
    if structs is None:
        from ._reply_shapes import STRUCTS

        structs = STRUCTS
    return _fits(value, ("struct", name), structs)


def _fits(value: object, shape: Shape, structs: Mapping[str, StructShape]) -> bool:
    kind = shape[0]
    if kind == "str":
        return type(value) is str and _text(value) and _within(len(value), shape[1], shape[2])
    if kind == "int":
        return type(value) is int and _within(value, shape[1], shape[2])
    if kind == "float":  # within a double's range: msgspec refuses the rest (review28)
        return (value - value == 0.0) if type(value) is float else \
            type(value) is int and -_INT_AS_FLOAT < value < _INT_AS_FLOAT
    if kind == "bool":
        return type(value) is bool
    if kind == "null":
        return value is None
    if kind == "datetime":
        return type(value) is str and _datetime(value, shape[1])
    if kind == "literal":
        return any(type(value) is type(v) and value == v for v in shape[1])
    if kind == "seq":
        return type(value) is list and _within(len(value), shape[2], shape[3]) and \
            all(_fits(item, shape[1], structs) for item in value)
    if kind == "union":
        return any(_fits(value, member, structs) for member in shape[1])
    if kind == "struct":
        return type(value) is dict and _struct(value, structs[shape[1]], structs)
    return False  # "never", or a kind this reader does not know


def _struct(value: dict[str, object], struct: StructShape,
            structs: Mapping[str, StructShape]) -> bool:
    tag_field, tag, closed, fields = struct
    if tag_field is not None and (tag_field not in value or value[tag_field] != tag
                                  or type(value[tag_field]) is not str):
        return False
    known = {name for name, _, _ in fields} | {tag_field}
    if closed and not set(value) <= known:
        return False
    # msgspec reads the fields it skips too: their text must be UTF-8, as any of ours.
    if not all(_text(key) and (key in known or _plain_json(item)) for key, item in value.items()):
        return False
    for name, required, shape in fields:
        if name not in value:
            if required:
                return False
        elif not _fits(value[name], shape, structs):
            return False
    return True


def _plain_json(value: object) -> bool:
    """An unknown field's value: every string in it (keys too) valid UTF-8."""
    if type(value) is str:
        return _text(value)
    if type(value) is list:
        return all(_plain_json(item) for item in value)
    if type(value) is dict:
        return all(_text(key) and _plain_json(item) for key, item in value.items())
    return True


def _within(number: int, low: int | None, high: int | None) -> bool:
    return (low is None or number >= low) and (high is None or number <= high)


def _text(value: str) -> bool:
    """A string msgspec reads: valid UTF-8 (the scanner lets a lone surrogate through)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _datetime(text: str, tz: bool | None) -> bool:
    """``YYYY-MM-DDTHH:MM:SS[.f{1,6}][Z|+HH:MM|-HH:MM]``, each part in range (by hand: an
    attached launch does not import ``datetime``)."""
    head, rest = text[:19], text[19:]
    if len(head) != 19 or head[4] != "-" or head[7] != "-" or head[10] != "T" or \
            head[13] != ":" or head[16] != ":" or \
            not all(set(head[i:j]) <= _DIGITS for i, j in ((0, 4), (5, 7), (8, 10), (11, 13),
                                                            (14, 16), (17, 19))):
        return False
    if rest.startswith("."):
        digits = len(rest) - len(rest[1:].lstrip("0123456789")) - 1
        if not 1 <= digits <= 6:
            return False
        rest = rest[1 + digits:]
    offset = rest != ""
    if offset and rest != "Z" and (
            len(rest) != 6 or rest[0] not in "+-" or rest[3] != ":"
            or not set(rest[1:3] + rest[4:]) <= _DIGITS or int(rest[1:3]) > 23
            or int(rest[4:]) > 59):
        return False
    if tz is not None and tz != offset:
        return False
    year, month, day = int(head[0:4]), int(head[5:7]), int(head[8:10])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    return year >= 1 and 1 <= month <= 12 and 1 <= day <= days[month - 1] and \
        int(head[11:13]) <= 23 and int(head[14:16]) <= 59 and int(head[17:19]) <= 59


# ------------------------------------------------------------------- the table, generated


def generate() -> str:
    """The text of ``nonod._reply_shapes``: the shapes of :data:`READ_BY_HAND`, from
    ``nonod.protocol``'s types as ``msgspec.inspect`` reads them. Run
    ``python -c 'from nonod._shapes import generate; print(generate(), end="")' >
    nonod/_reply_shapes.py`` after changing a reply's type."""
    import pprint

    import msgspec.inspect as mi

    from . import protocol

    structs: dict[str, StructShape] = {}

    def shape(info: Any) -> Shape:
        if isinstance(info, mi.StrType):
            if info.pattern is not None:
                return ("never",)
            return ("str", info.min_length, info.max_length)
        if isinstance(info, mi.IntType):
            if info.multiple_of is not None:
                return ("never",)
            low = info.ge if info.gt is None else info.gt + 1
            high = info.le if info.lt is None else info.lt - 1
            return ("int", low, high)
        if isinstance(info, mi.FloatType):
            bounds = (info.gt, info.ge, info.lt, info.le, info.multiple_of)
            return ("float",) if all(b is None for b in bounds) else ("never",)
        if isinstance(info, mi.BoolType):
            return ("bool",)
        if isinstance(info, mi.NoneType):
            return ("null",)
        if isinstance(info, mi.DateTimeType):
            return ("datetime", info.tz)
        if isinstance(info, mi.LiteralType):
            return ("literal", tuple(info.values))
        if isinstance(info, mi.ListType | mi.VarTupleType):
            return ("seq", shape(info.item_type), info.min_length, info.max_length)
        if isinstance(info, mi.UnionType):
            return ("union", tuple(shape(member) for member in info.types))
        if isinstance(info, mi.StructType) and not info.array_like:
            name = info.cls.__name__
            if name not in structs:
                structs[name] = (None, None, False, ())  # a cycle reads the name
                structs[name] = (info.tag_field, info.tag, info.forbid_unknown_fields,
                                 tuple((f.encode_name, f.required, shape(f.type))
                                       for f in info.fields))
            return ("struct", name)
        return ("never",)

    for name in READ_BY_HAND:
        shape(mi.type_info(getattr(protocol, name)))
    table = pprint.pformat(dict(sorted(structs.items())), width=96, sort_dicts=False)
    return (
        '"""The shapes of the replies the lean client reads by hand, generated from\n'
        "``nonod.protocol``'s types by ``nonod._shapes.generate``: do not edit (see\n"
        '``nonod._shapes``)."""\n\n'
        f"STRUCTS = {table}\n")
