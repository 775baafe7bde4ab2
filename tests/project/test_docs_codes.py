"""The tables of plan codes in docs/plan-apply.md are generated from the planner's enums
(compiler/plan/codes.py): a code added, renamed or redescribed shows up here, so the
docs cannot go stale. ``PKIC_UPDATE_GOLDEN=1`` rewrites the section."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from helpers import assert_generated

from compiler.plan import Action, KeyDisposition, PublicationCode, PublicationKind, ReasonCode

PAGE = Path(__file__).resolve().parents[2] / "docs" / "plan-apply.md"
START, END = "<!-- generated: plan codes -->\n", "<!-- /generated -->\n"


def _table(title: str, head: str, enum: type[Enum]) -> str:
    rows = "".join(f"| `{m.value}` | {m.description} |\n" for m in enum)
    return f"{title}\n\n| {head} | meaning |\n| --- | --- |\n{rows}\n"


def generated() -> str:
    return (
        _table("**Actions**", "action", Action)
        + _table("**Keys** (each change says what happens to its key)", "key", KeyDisposition)
        + _table("**Reason codes** of a change", "reason code", ReasonCode)
        + _table("**Publications** (what apply signs or removes besides certificates)", "kind", PublicationKind)
        + _table("**Publication codes**", "code", PublicationCode)
    )


def test_docs_list_every_plan_code_as_the_enums_describe_it():
    assert_generated(PAGE, START, END, generated(), "compiler/plan/codes.py")
