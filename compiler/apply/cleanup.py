"""Cleanup: the renames and removals the plan lists (``Plan.cleanup``, decided by
compiler.plan.cleanup), and nothing else. Each is a journal step like a signature, so a
killed apply is finished from its journal; publish.py places them among its steps."""

from __future__ import annotations

from compiler.apply.context import Context, Steps
from compiler.model.stamp import Stamp
from compiler.plan import Cleanup, PublicationKind
from compiler.state import CrlOp, OcspInfo, OcspOp


def _response(ctx: Context, item: Cleanup) -> tuple[str, OcspInfo]:
    """The serial and response record the plan's ``item`` is about, as the state holds it now."""
    assert item.serial is not None, f"{item.name}: an OCSP cleanup names its certificate's serial"
    rec = next(r for r in ctx.state.certificates[item.name] if r["serial"] == item.serial)
    info = rec.get("ocsp") or {}
    assert info.get("file") == item.file, f"{item.name}: the plan's {item.file} is not the response the state records"
    return item.serial, OcspInfo(**info)


def responses_renamed(ctx: Context) -> Steps:
    """Responses moved to where they belong: before new responses are signed, so the
    new certificate's never overwrites the previous one's."""
    for item in ctx.plan.cleanup:
        if item.kind == PublicationKind.OCSP and item.to is not None:
            serial, info = _response(ctx, item)
            yield OcspOp(name=item.name, serial=serial, info={**info, "file": item.to}, moved_from=item.file, at=ctx.at)


def responses_removed(ctx: Context) -> Steps:
    """The responses of expired certificates removed (the state keeps the record, with
    no file)."""
    for item in ctx.plan.cleanup:
        if item.kind == PublicationKind.OCSP and item.to is None:
            serial, info = _response(ctx, item)
            yield OcspOp(name=item.name, serial=serial, info={**info, "file": None}, removed=item.file, at=ctx.at)


def crls_removed(ctx: Context) -> Steps:
    """The CRL files of authorities that sign no more, one step per authority; its CRL
    record (number and all) stays, marked ``removed_at``."""
    files: dict[str, list[str]] = {}
    for item in ctx.plan.cleanup:
        if item.kind == PublicationKind.CRL:
            files.setdefault(item.name, []).append(item.file)
    for a, removed in files.items():
        yield CrlOp(authority=a, info={**ctx.state.crls[a], "removed_at": Stamp.of(ctx.now)}, removed=removed, at=ctx.at)
        ctx.result.crls_removed.append(a)
