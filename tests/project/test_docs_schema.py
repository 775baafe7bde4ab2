"""docs/schema/ holds the JSON Schemas of pki.yaml and of policy files, as `pkic schema`
and `pkic schema --policy` print them (generated from the models), so that an editor can
point at them without installing pkic, and the docs cannot go stale: a field added,
renamed or redescribed changes the schema, and this test fails until the file is
regenerated (``PKIC_UPDATE_GOLDEN=1``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from compiler.policy.rules import json_schema as policy_schema
from compiler.spec import json_schema as spec_schema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schema"


@pytest.mark.parametrize(("name", "schema", "args"), [("pki.schema.json", spec_schema, []), ("policy.schema.json", policy_schema, ["--policy"])])
def test_docs_schemas_are_what_pkic_schema_prints(pkic, tmp_path, name, schema, args):
    want = json.dumps(schema(), indent=2, sort_keys=True) + "\n"
    assert pkic.ok("schema", *args, cwd=tmp_path).stdout == want  # the command prints exactly this
    path = DOCS / name
    if os.environ.get("PKIC_UPDATE_GOLDEN") and (not path.exists() or path.read_text() != want):
        path.parent.mkdir(exist_ok=True)
        path.write_text(want)
    assert path.read_text() == want, f"docs/schema/{name} differs from `pkic schema {' '.join(args)}`: run with PKIC_UPDATE_GOLDEN=1"
