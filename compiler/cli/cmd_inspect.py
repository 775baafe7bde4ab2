"""The commands that read a repository and report: status, verify, check, history, graph, report, schema, validate."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import typer

from compiler.cli.app import (
    NOW_HELP,
    app,
    err,
    escape,
    escape_lines,
    opts,
    out,
    output_format,
    parse_now,
    repo_relative,
    write_json,
    write_out_file,
)
from compiler.model.errors import Diagnostic, PkicError, fail
from compiler.state import ts


@app.command()
def status(
    now: str | None = typer.Option(None, "--now", help=NOW_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the inventory as JSON"),
    all_: bool = typer.Option(False, "--all", help="include revoked certificates"),
) -> None:
    """The inventory: every certificate, its issuer, serial, validity and days left."""
    from compiler.cli.render import crl_rows, crl_table, status_plain, status_rows, status_table
    from compiler.state import load_with_journal

    state, _ = load_with_journal(opts.repo)
    when = parse_now(now)
    rows = status_rows(state, when)
    if not all_:
        rows = [r for r in rows if r["status"] != "revoked"]
    crls = crl_rows(state, when)  # each CRL records its refresh point: no need to load pki.yaml
    seal_line = _seal_status(opts.repo)
    if as_json:
        write_json({"certificates": rows, "crls": crls, "state_serial": state.serial, "lineage": state.lineage, "seal": seal_line})
        return
    if not rows:
        out.print("No certificates issued yet. Run `pkic plan`, then `pkic apply`.")
        out.print(f"seal: {escape(seal_line)}")
        return
    if len(rows) > 300:
        sys.stdout.write(status_plain(rows))
    else:
        out.print(status_table(rows))
    if crls:
        out.print(crl_table(crls))
    out.print(f"seal: {escape(seal_line)}")
    for r in crls:
        if r["status"] == "expired":
            err.print(
                f"[bold red]CRL of {escape(r['authority'])} EXPIRED at {escape(r['next_update'])}: TLS clients that check CRLs reject every certificate it issued. Run `pkic apply` now.[/]"
            )
        elif r["status"] == "due":
            err.print(
                f"[yellow]CRL of {escape(r['authority'])} is due for re-signing (next update {escape(r['next_update'])}): run `pkic apply`.[/]"
            )


def _seal_status(repo: Path) -> str:
    """One line for status: what out.seal says (not verified: `verify --seal` does that)."""
    from compiler import layout
    from compiler.state import MAX_SEAL, parse_seal

    try:
        raw = layout.read_file(repo, layout.SEAL_PATH, MAX_SEAL + 1)
        if raw is None:
            return "unsealed: no out.seal; nothing proves who wrote out/ (see docs/security.md)"
        s = parse_seal(raw)
    except PkicError as exc:
        return f"out.seal is unreadable: {exc.diagnostics[0].message}"
    return f"sealed: seal serial {s.serial}, state serial {s.state_serial}, key {s.public_key} (`pkic verify --seal` checks it)"


@app.command()
def verify(
    now: str | None = typer.Option(None, "--now", help=NOW_HELP),
    keys: bool = typer.Option(False, "--keys", help="also decrypt every key (needs the identity) and match it to its certificate"),
    check_seal: bool = typer.Option(
        False, "--seal", help="check out.seal and its chain in git history against the recorded (or --seal-key) public key; no secret"
    ),
    seal_key: str | None = typer.Option(
        None, "--seal-key", help="the seal public key to check against (ed25519:...), e.g. from your own records"
    ),
    base: str | None = typer.Option(None, "--base", help="take the seal public key from the merge base with this branch"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON (exit codes as without it)"),
) -> None:
    """Check out/: certificates match the state, chains lead to a trusted root, (--keys) keys match, (--seal) the seal holds."""
    from compiler.keys.keystore import Keystore
    from compiler.state import load_state
    from compiler.verify import verify_repo

    if check_seal or seal_key:
        from compiler.state import examine, parsed_seals, recorded_public_key, sealed_findings

        public, source = (seal_key, "--seal-key") if seal_key else recorded_public_key(opts.repo, base)
        report = examine(opts.repo, public)
        problems = report.problems + sealed_findings(opts.repo, report)
        if report.mode == "unsealed":
            raise PkicError("this repository is unsealed: no out.seal to verify", "`pkic seal init` seals it (see docs/security.md)")
        if as_json and problems:
            write_json({"ok": False, "seal": {"ok": False, "problems": [_diag_json(d) for d in problems]}})
        for d in [] if as_json else problems:
            err.print(f"[bold red]✗[/] {escape_lines(d.render())}")
        if problems:
            raise typer.Exit(1)
        versions = len({s.digest for _c, s in parsed_seals(report.git.history(opts.repo)) if public is not None and s.valid_under(public)})
        chain = f"{versions} seal(s) made with it in history form one chain" if versions else "no sealed commit yet"
        seal_json = {
            "ok": True,
            "serial": report.seal.serial if report.seal else None,
            "key": public,
            "key_from": source,
            "seals_in_history": versions,
        }
        if not as_json:
            out.print(
                f"[green]✓[/] out/ is sealed: seal serial {report.seal.serial if report.seal else '?'}, key {escape(public)} (from {escape(source)}); {chain}."
            )
    state = load_state(opts.repo)
    count, findings = verify_repo(opts.repo, state, parse_now(now), Keystore(opts.repo) if keys else None)
    if not count:
        raise PkicError("nothing to verify: no certificate has been issued yet", "run `pkic apply` first")
    if as_json:
        body: dict[str, Any] = {
            "ok": not findings,
            "verified": count,
            "keys": keys,
            "findings": [{"name": f.name, "problem": f.problem} for f in findings],
        }
        if check_seal or seal_key:
            body["seal"] = seal_json
        write_json(body)
    for f in [] if as_json else findings:
        err.print(f"[bold red]✗[/] {escape(f.name)}: {escape(f.problem)}")
    if findings:
        raise typer.Exit(1)
    if not as_json:
        what = "certificates, chains, CRLs and keys" if keys else "certificates, chains and CRLs"
        out.print(f"[green]✓[/] {count} {what} verified.")


def _diag_json(d: Diagnostic) -> dict[str, Any]:
    return {"file": d.file, "line": d.line, "column": d.column, "field": d.path, "message": d.message, "hint": d.hint}


@app.command()
def check(
    warn: str = typer.Option("30d", "--warn", help="warn when a certificate expires within this (at most a third of its lifetime)"),
    critical: str = typer.Option("7d", "--critical", help="critical when anything expires within this (or a quarter of its lifetime)"),
    now: str | None = typer.Option(None, "--now", help=NOW_HELP),
    as_json: bool = typer.Option(False, "--json", help="print every item as JSON (the same as --format json)"),
    fmt: Literal["text", "json", "prometheus"] = typer.Option("text", "--format", help="text, json, or prometheus (textfile collector)"),
    save: Path | None = typer.Option(
        None, "--out", metavar="FILE", help="write the output to this file (atomically; for textfile collectors)"
    ),
) -> None:
    """Expiry monitoring: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios convention)."""
    from compiler import spec as spec_mod
    from compiler.check import LEVEL_NAMES, UNKNOWN, overall, prometheus, run_check, summary_line
    from compiler.model.durations import parse_duration
    from compiler.model.errors import printable
    from compiler.state import load_with_journal

    output_format(as_json, fmt)
    fmt = "json" if as_json else fmt
    try:
        try:
            warn_d, crit_d = parse_duration(warn), parse_duration(critical)
        except ValueError as exc:
            raise PkicError(str(exc)) from None
        when = parse_now(now)
        state, _ = load_with_journal(opts.repo)
        if state.lineage is None and not state.certificates:
            raise PkicError("nothing issued yet: no out/state.json", "run `pkic apply` first, or use -C DIR")
        try:
            effective = spec_mod.load(opts.repo)
        except PkicError:
            effective = None  # the state alone still tells what expires when
        items = run_check(state, effective, when, warn_d, crit_d)
        from compiler.check import CRITICAL, Item
        from compiler.verify import bundle_problem

        problem = bundle_problem(opts.repo, state) if state.active_names() else None
        if problem:  # what clients trust is not what the state says: worse than any expiry
            items.append(Item("bundle", "trust", None, "", CRITICAL, problem))
    except PkicError as exc:
        line = f"PKIC UNKNOWN - {exc.diagnostics[0].render().splitlines()[0]}"
        if fmt == "json":
            write_json({"status": "UNKNOWN", "code": UNKNOWN, "summary": line, "items": []})
        else:
            out.print(escape(line))
        raise typer.Exit(UNKNOWN) from None
    level = overall(items)
    summary = summary_line(items)
    if fmt == "prometheus":
        text = prometheus(items, when)
    elif fmt == "json":
        text = (
            json.dumps(
                {"status": LEVEL_NAMES[level], "code": level, "summary": summary, "now": ts(when), "items": [i.to_json() for i in items]},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
    else:
        # one line per item (a monitoring system reads the first as the verdict): a name
        # from the state never breaks one
        text = (
            printable(summary)
            + "\n"
            + "".join(f"  {LEVEL_NAMES[i.level]:<8} {i.kind:<11} {printable(i.name)}: {printable(i.message)}\n" for i in items if i.level)
        )
    if save is not None:
        from compiler.layout import write_atomic

        inside = repo_relative(save)  # in the repo (which a pull request writes): no component followed
        if inside is not None and (".." in Path(inside).parts or inside in ("", ".")):
            raise fail(str(save), "is not a file path inside the repository", "pass a path like metrics/pkic.prom, or an absolute one")
        try:
            if inside is not None:
                write_atomic(opts.repo, inside, text.encode())
            else:
                write_atomic(save.parent, save.name, text.encode())
        except OSError as exc:
            raise fail(str(save), f"cannot write: {exc.strerror}") from None
        out.print(escape(summary))
    else:
        sys.stdout.write(text)
    raise typer.Exit(level)


@app.command()
def history(
    name: str = typer.Argument(..., help="a certificate or authority name"),
    as_json: bool = typer.Option(False, "--json", help="print as JSON"),
) -> None:
    """Every version of a certificate from the git log: when, commit, author, action, serial, reason."""
    from rich.table import Table
    from rich.text import Text

    from compiler.gitops import history as git_history
    from compiler.model.errors import printable

    events = git_history(opts.repo, name)
    if as_json:
        write_json({"name": name, "events": events})
        return
    if not events:
        out.print(f"No history for '{escape(name)}' (pkic apply --commit records it in git).")
        return
    table = Table(title=Text(f"history of {printable(name)}"), title_justify="left", header_style="bold")
    for col in ("date", "commit", "author", "action", "serial", "reason"):
        table.add_column(col)
    for e in events:  # commit messages and authors are anyone's: cells are Text, never markup
        table.add_row(
            *(
                Text(printable(v))
                for v in (e["date"], e["commit"][:12], e["author"], e["action"], (e["serial"] or "")[:16], e["reason"] or "")
            )
        )
    out.print(table)


@app.command()
def graph(
    fmt: Literal["mermaid", "dot"] = typer.Option("mermaid", "--format", help="mermaid or dot (Graphviz)"),
    save: Path | None = typer.Option(None, "--out", metavar="FILE", help="write the diagram to this file"),
) -> None:
    """The hierarchy as a Mermaid or Graphviz diagram."""
    from compiler import graph as graph_mod
    from compiler import spec as spec_mod

    effective = spec_mod.load(opts.repo)
    revoked = {n for n, e in effective.entries.items() if e.revoke}
    text = graph_mod.mermaid(effective, revoked) if fmt == "mermaid" else graph_mod.dot(effective, revoked)
    if save is None:
        sys.stdout.write(text)
    else:
        write_out_file(save, text.encode("utf-8"), "the diagram")
        out.print(f"[green]Wrote[/] {escape(save)}.")


@app.command()
def report(
    save: Path = typer.Option(Path("report.html"), "--out", help="where to write the HTML report"),
    now: str | None = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """A self-contained HTML report for auditors: hierarchy, validity timeline, revocations, recent changes."""
    from compiler import spec as spec_mod
    from compiler.gitops import recent_commits
    from compiler.report import render_report
    from compiler.state import load_with_journal

    state, _ = load_with_journal(opts.repo)
    try:
        effective = spec_mod.load(opts.repo)
    except PkicError:
        effective = None
    html = render_report(state, effective, recent_commits(opts.repo), parse_now(now))
    write_out_file(save, html.encode("utf-8"), "the report")
    out.print(f"[green]Wrote[/] {escape(save)} ({len(html) // 1024} KiB, self-contained).")


@app.command()
def schema(
    for_policy: bool = typer.Option(False, "--policy", help="the schema of policy files (policies/<name>.yaml) instead"),
) -> None:
    """Print the JSON Schema of pki.yaml (for editor autocompletion)."""
    if for_policy:
        from compiler.policy.rules import json_schema
    else:
        from compiler.spec import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")


@app.command()
def validate(
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON (exit 1 when invalid, as without it)"),
) -> None:
    """Check pki.yaml, policies/, CSRs and .sops.yaml alone: fast, no state, no secret (pre-commit, PR checks)."""
    from compiler import spec as spec_mod
    from compiler.plan import check_horizon
    from compiler.policy import rules as policy
    from compiler.spec.sops_config import creation_rules

    diags: list[Diagnostic] = []
    effective = None
    try:
        effective = spec_mod.load(opts.repo)
        policy.check_all(effective, opts.repo)
        check_horizon(effective, parse_now(None))
    except PkicError as exc:
        diags += exc.diagnostics
    try:
        rules = creation_rules(opts.repo)
    except PkicError as exc:
        diags += exc.diagnostics
    if diags and as_json:
        from compiler.spec import locate

        write_json({"ok": False, "errors": [_diag_json(d) for d in locate(opts.repo, diags)]})
        raise typer.Exit(1)
    if diags:
        raise PkicError(diags)
    assert effective is not None
    if as_json:
        write_json({"ok": True, "entries": len(effective.entries), "sops_rules": None if rules is None else len(rules)})
        return
    sops = "no .sops.yaml (pkic init writes one)" if rules is None else f".sops.yaml has {len(rules)} creation rule(s)"
    out.print(f"[green]✓[/] pki.yaml is valid: {len(effective.entries)} entries; every policy holds; {sops}.")
