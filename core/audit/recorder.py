"""Writes the audit entry of a call: the pipeline calls this after every
successful mutation (and every read a rule marks with an audit action), in
the same transaction as the call's own writes, so no service records by
hand and no change lands without its entry.

The change is shown in API field names (the JSON mapping). Fields marked
``(observe.v1.field).sensitive`` in the proto show as ``{"redacted": true}``
wherever they appear: in the diff and in delete snapshots. An audited read
(``READ_MONITOR_SECRETS``) changed nothing: its entry says who read what,
from where (resource, ip, ua), with no changedFields, diff or snapshot.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import insert

from core import clock
from core.rpc.context import AuditNote, CallContext
from core.rpc.jsonmap import JsonCodec
from core.rpc.methods import Method, sensitive_paths
from core.storage import tables as t
from core.storage.db import Database

REDACTED = {"redacted": True}
RESOURCE_MAX = 200  # the column's length
_codec = JsonCodec()


def _redacted(data: dict[str, Any], sensitive: frozenset[str]) -> dict[str, Any]:
    """A copy of ``data`` with every sensitive path replaced by REDACTED."""
    out: dict[str, Any] = json.loads(json.dumps(data))
    for path in sensitive:
        _redact(out, path.split("."))
    return out


def _redact(data: Any, parts: list[str]) -> None:
    if not isinstance(data, dict) or parts[0] not in data:
        return
    if len(parts) == 1:
        if data[parts[0]] not in (None, "", [], {}):
            data[parts[0]] = dict(REDACTED)
        return
    inner = data[parts[0]]
    for item in inner if isinstance(inner, list) else [inner]:
        _redact(item, parts[1:])


def _is_empty(value: Any) -> bool:
    return value in (None, "", [], {}, 0, False)


def change(
    before: dict[str, Any] | None, after: dict[str, Any] | None, sensitive: frozenset[str] = frozenset()
) -> tuple[list[str], dict[str, Any]]:
    """changedFields and diff between two JSON forms (either may be None).
    Changes are found on the real values; the diff shows sensitive ones as
    REDACTED, so a rotated secret is reported without being revealed."""
    before, after = before or {}, after or {}
    shown_before, shown_after = _redacted(before, sensitive), _redacted(after, sensitive)
    changed: list[str] = []
    diff: dict[str, Any] = {}
    for key in list(after) + [k for k in before if k not in after]:
        old, new = before.get(key), after.get(key)
        if old == new or (_is_empty(old) and _is_empty(new)):
            continue
        changed.append(key)
        if key in sensitive:
            diff[key] = dict(REDACTED)
        else:
            diff[key] = {"from": shown_before.get(key), "to": shown_after.get(key)}
    return changed, diff


def _default_resource(method: Method, request: Message) -> str:
    noun = method.descriptor.containing_service.name.removesuffix("Service").lower()
    resource_id = getattr(request, "id", None) if "id" in request.DESCRIPTOR.fields_by_name else None
    return f"{noun}:{resource_id}" if resource_id else noun


async def record(db: Database, method: Method, request: Message, ctx: CallContext) -> None:
    """Appends the entry for this call. The pipeline calls it in the call's
    unit of work, so the entry commits with the change or not at all."""
    note = ctx.audit
    principal = ctx.principal
    org_id = principal.org_id if principal else note.actor_org_id
    if org_id is None:
        return  # a public call that touched no organisation (e.g. a failed lookup)
    meta: dict[str, Any] = {"ip": ctx.ip, "ua": ctx.user_agent}
    if method.rule.mutation:
        meta = {**_change_meta(request, note), **meta}
    row = {
        "org_id": org_id,
        "created_at": clock.now(),
        "actor_user_id": principal.user_id if principal else note.actor_user_id,
        "actor_pat_id": principal.pat_id if principal else None,
        "actor_email": principal.email if principal else note.actor_email,
        "action": note.action or method.rule.audit_action,
        "resource": (note.resource or _default_resource(method, request))[:RESOURCE_MAX],
        "meta": json.dumps(meta, separators=(",", ":")),
    }
    async with db.write() as conn:
        await conn.execute(insert(t.audit_logs).values(**row))


def _change_meta(request: Message, note: AuditNote) -> dict[str, Any]:
    """changedFields and diff of a mutation (and a snapshot of what it deleted)."""
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    shown: Message | None
    if note.before is None and note.after is None:
        shown, after = request, _codec.encode(request)
    else:
        shown = note.before if note.before is not None else note.after
        before = _codec.encode(note.before) if note.before is not None else None
        after = _codec.encode(note.after) if note.after is not None else None
    assert shown is not None
    sensitive = sensitive_paths(shown.DESCRIPTOR)
    changed, diff = change(before, after, sensitive)
    meta: dict[str, Any] = {"changedFields": changed, "diff": diff}
    if before is not None and note.after is None:
        meta["snapshot"] = _redacted(before, sensitive)
    return meta
