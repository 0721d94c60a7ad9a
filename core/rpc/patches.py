"""What a create or patch body gives: the fields it sets, or for a patch the
fields its update mask names (proto or JSON names; a named field left unset
clears it). Services turn the values into their own settings dicts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from google.protobuf.message import Message


def is_set(msg: Message, fd: Any) -> bool:
    if fd.is_repeated:
        return len(getattr(msg, fd.name)) > 0
    return bool(msg.HasField(fd.name))


def given_fields(msg: Message, mask: Iterable[str] | None = None) -> Iterator[tuple[Any, bool]]:
    """(field, set?) for each field the body gives: those ``mask`` names, else those set."""
    desc = msg.DESCRIPTOR
    if mask is None:
        for fd in desc.fields:
            if is_set(msg, fd):
                yield fd, True
        return
    by_json = {fd.json_name: fd for fd in desc.fields}
    for path in mask:
        fd = desc.fields_by_name.get(path) or by_json[path]
        yield fd, is_set(msg, fd)


def unknown_mask_paths(desc: Any, mask: Iterable[str]) -> list[str]:
    """The mask's paths that name no field of ``desc`` (by proto or JSON name)."""
    known = {fd.name for fd in desc.fields} | {fd.json_name for fd in desc.fields}
    return [p for p in mask if p not in known]
