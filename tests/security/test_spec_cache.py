"""Attack: a resolved-spec cache standing in for pki.yaml.

plan keeps the resolved spec in ``$XDG_CACHE_HOME/pkic/spec/<repo>/pki.yaml.<sha256 of
pki.yaml>.json`` (see compiler/spec/cache.py: cache_dir, _cache_path, _dump_effective), and the certificates
of a spec it can split in ``entries.json`` beside it (compiler/spec/incremental.py). On a
shared or persistent runner, anything that can write there (an earlier job running a
pull request's code, another user of a world-writable cache) could plant one that
claims an extra leaf for the exact bytes of the reviewed pki.yaml. apply must never
read it; plan must read it only from a private (0700, our own) directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from compiler.spec.incremental import decode_records, encode_records

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import T1, read_state  # noqa: E402

pytest_plugins = ["seclib"]  # the forge, template and local fixtures


def _plant(forge, repo: Path, env: dict) -> Path:
    """Let plan write the genuine cache for this clone, then make it lie: a leaf `rogue`
    added to the resolved-spec cache, or (the entry cache, where plan keeps a spec it can
    split) `web` given the name rogue.example.com. Returns the file planted."""
    forge.pkic.ok("plan", "--now", T1, cwd=repo, env=env)
    base = Path(env["XDG_CACHE_HOME"])
    caches = list(base.glob("pkic/spec/*/pki.yaml.*.json")) + list(base.glob("pkic/spec/*/entries.json"))
    assert len(caches) == 1, caches
    if caches[0].name == "entries.json":
        records = decode_records(caches[0].read_text())
        for digest, (text, mac) in records.items():
            record = json.loads(text)
            if record["name"] == "web":
                record["entry"]["spec"]["dns"] = [*record["entry"]["spec"]["dns"], "rogue.example.com"]
                records[digest] = (json.dumps(record), mac)
        caches[0].write_text("".join(encode_records(records)))
        return caches[0]
    body = json.loads(caches[0].read_text())
    web = next(e for e in body["entries"] if e["name"] == "web")
    rogue = json.loads(json.dumps(web))
    rogue["name"] = "rogue"
    rogue["spec"]["dns"] = ["rogue.example.com"]
    body["entries"].append(rogue)
    body["children"]["services-ca"].append("rogue")
    caches[0].write_text(json.dumps(body))
    return caches[0]


@pytest.fixture
def planted(forge):
    repo = forge.clone("ci")
    env = {"XDG_CACHE_HOME": str(forge.root / "runner-cache")}
    cache = _plant(forge, repo, env)
    return forge, repo, env, cache


def test_apply_never_reads_the_spec_cache(planted):
    forge, repo, env, _cache = planted
    head = forge.head(repo)
    p = forge.pkic("apply", "--yes", "--commit", "--now", T1, cwd=repo, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "rogue" not in p.stdout and "rogue" not in read_state(repo)["certificates"], p.stdout
    assert not (repo / "out" / "certs" / "rogue.pem").exists()
    assert forge.head(repo) == head  # nothing to do: the reviewed pki.yaml asks for nothing new


def test_apply_with_a_reviewed_change_ignores_a_cache_for_it(forge):
    """The cache is planted for the exact bytes of the *next* reviewed pki.yaml (as a
    job that saw the pull request could): after the merge, apply issues only `api`."""
    from seclib import API

    repo = forge.clone("ci")
    (repo / "pki.yaml").write_text((repo / "pki.yaml").read_text() + API)
    env = {"XDG_CACHE_HOME": str(forge.root / "runner-cache")}
    _plant(forge, repo, env)
    forge.pull_request("add-api", lambda a: (a / "pki.yaml").write_text((a / "pki.yaml").read_text() + API), "pki: add api")
    forge.git(repo, "checkout", "-q", "--", "pki.yaml")
    forge.git(repo, "pull", "-q", "--ff-only", "origin", "main")
    p = forge.pkic("apply", "--yes", "--commit", "--now", T1, cwd=repo, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    certs = read_state(repo)["certificates"]
    assert "api" in certs and "rogue" not in certs, p.stdout


def test_plan_ignores_a_cache_in_a_directory_others_can_write(planted):
    forge, repo, env, cache = planted
    os.chmod(cache.parent, 0o777)
    p = forge.pkic("plan", "--now", T1, cwd=repo, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "rogue" not in p.stdout, p.stdout


def test_plan_reads_its_own_cache(planted):
    """The two tests above would pass with no cache at all: in a private directory, a
    plan without the seal key (a pull request's) does read the planted file (that is what
    makes apply's refusal to read it matter)."""
    forge, repo, env, _cache = planted
    p = forge.pkic("plan", "--now", T1, cwd=repo, env={**env, "PKIC_SEAL_KEY_FILE": str(forge.root / "no-seal-key")})
    assert "rogue" in p.stdout, p.stdout


def test_a_plan_where_the_seal_key_is_takes_only_what_apply_made(planted):
    """A plan on a machine holding the seal key keeps apply's caches (so that the apply
    after it loads only what changed): it takes only records authenticated with the key,
    as apply does, and so never reads the planted one, nor makes it authentic for the
    apply that follows."""
    forge, repo, env, cache = planted
    p = forge.pkic("plan", "--now", T1, cwd=repo, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "rogue" not in p.stdout, p.stdout
    if cache.name == "entries.json":
        kept = decode_records(cache.read_text())
        assert all(mac is not None for _, mac in kept.values())
        assert not any("rogue" in text for text, _ in kept.values())
    p = forge.pkic("apply", "--yes", "--now", T1, cwd=repo, env=env)
    assert p.returncode == 0 and "rogue" not in p.stdout, p.stdout + p.stderr



# --------------------------------------------------------------------------- apply's own entries
# apply takes from the entry cache only records authenticated with a key derived from the
# seal key (compiler/spec/incremental.py): a plan, holding no secret, cannot make one.


def _records(home: Path) -> tuple[Path, dict]:
    (path,) = list(home.glob(".cache/pkic/spec/*/entries.json"))
    return path, {"records": decode_records(path.read_text())}


def _save(path: Path, body: dict) -> None:
    path.write_text("".join(encode_records(body["records"])))


def _rogue(pair: tuple) -> tuple:
    record = json.loads(pair[0])
    record["entry"]["spec"]["dns"] = [*record["entry"]["spec"]["dns"], "rogue.example.com"]
    return (json.dumps(record, separators=(",", ":")), pair[1])


def _edit_web(body: dict, change) -> None:
    for digest, pair in body["records"].items():
        if json.loads(pair[0])["name"] == "web":
            body["records"][digest] = change(digest, pair)


@pytest.mark.parametrize("mac", ["kept", "none", "valid"])
def test_apply_takes_only_entries_it_authenticated(tmp_path: Path, mac: str) -> None:
    """A record changed behind apply's back (its mac kept), or made by a plan (no mac), is
    not taken; one authenticated with apply's key is (which shows that apply does read
    the cache, so that the first two cases cannot pass vacuously)."""
    from conftest import NOW, make_pkic

    from compiler.spec.incremental import _mac
    from compiler.state.sealkey import cache_mac_key, parse_key

    pkic = make_pkic(tmp_path)
    pkic.ok("init", str(tmp_path / "pki"))
    repo = tmp_path / "pki"
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)  # a full load: apply keeps its entries
    path, body = _records(pkic.home)
    assert all(pair[1] for pair in body["records"].values()), "apply authenticates what it keeps"
    key = cache_mac_key(parse_key(Path(pkic.env["PKIC_SEAL_KEY_FILE"]).read_text(), "seal key"))
    if mac == "kept":
        _edit_web(body, lambda d, pair: _rogue(pair))
    elif mac == "none":
        _edit_web(body, lambda d, pair: (_rogue(pair)[0], None))
    else:
        _edit_web(body, lambda d, pair: ((text := _rogue(pair)[0]), _mac(key, d, text)))
    _save(path, body)
    p = pkic("apply", "--yes", "--now", NOW, cwd=repo)
    assert p.returncode == 0, p.stdout + p.stderr
    assert ("rogue.example.com" in p.stdout) is (mac == "valid"), p.stdout
