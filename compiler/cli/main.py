"""The command line: parse arguments, call one function, print, return an exit code.

This is the only module that prints. User mistakes (PkicError) become one clear report
and exit code 1; Ctrl-C exits 130; anything unexpected exits 3 with a short message.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import sys
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console

try:  # typer >= 0.20 vendors its own click
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer uses click itself
    import click

from compiler import __version__, settings
from compiler.model.errors import Diagnostic, PkicError, fail
from compiler.state import ts

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="pkic: a GitOps PKI compiler. Declare the PKI in pki.yaml; plan; apply.",
    pretty_exceptions_enable=False,
)


def _width(stream) -> int | None:
    if stream.isatty():
        return None
    try:
        return int(os.environ.get("COLUMNS", "120"))
    except ValueError:
        return 120


out = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))

_repo = Path(".")


@app.callback()
def _main(
    directory: Path | None = typer.Option(None, "-C", help="run as if pkic was started in this directory (like git -C)"),
    version: bool = typer.Option(False, "--version", help="print the version and exit"),
) -> None:
    global _repo
    if version:
        out.print(f"pkic {__version__}")
        raise typer.Exit(0)
    if directory is not None:
        if not directory.is_dir():
            raise PkicError(f"-C {directory}: no such directory")
        _repo = directory
    else:
        _repo = Path(".")


NOW_HELP = "pretend it is this time (RFC 3339, e.g. 2027-01-01T00:00:00Z); for testing renewals"


def parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail("--now", f"'{value}' is not a time", "use RFC 3339, e.g. 2027-01-01T00:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(microsecond=0)


def _load(now: datetime):
    from compiler import spec as spec_mod
    from compiler.apply import reviewed_inputs
    from compiler.plan import make_plan
    from compiler.policy import rules as policy
    from compiler.state import load_with_journal

    effective = spec_mod.load(_repo)
    state, _ops = load_with_journal(_repo)
    policy.check_all(effective, _repo, state)
    reviewed_inputs(_repo, effective)
    return effective, state, make_plan(effective, state, now)


TIME_TRAVEL_SLACK = timedelta(minutes=5)


def _time_travel_gate(when: datetime, flag: bool, env: bool) -> None:
    """apply signs real certificates and CRLs dated ``when``: dated in the future they are
    not yet valid, in the past already expired (and may start before their issuer). More
    than 5 minutes from this machine's clock is refused unless asked for."""
    real = datetime.now(UTC)
    off = when - real
    if abs(off) <= TIME_TRAVEL_SLACK:
        return
    far = (
        f"{abs(off).days}d {abs(off).seconds // 3600}h"
        if abs(off) >= timedelta(days=1)
        else f"{int(abs(off).total_seconds() // 60)} minutes"
    )
    if not (flag or env):
        raise fail(
            "--now",
            f"{ts_text(when)} is {far} {'ahead of' if off > timedelta(0) else 'behind'} this machine's clock: "
            "apply would sign real certificates and CRLs dated then (not yet valid, or already expired)",
            "drop --now to sign at the real time, or add --time-travel to mean it (tests, drills)",
        )
    if flag:  # PKIC_TIME_TRAVEL=1 (a test suite's setting) says nothing
        err.print(
            f"[yellow]! --time-travel:[/] signing as of {ts_text(when)}, {far} {'ahead of' if off > timedelta(0) else 'behind'} this machine's clock."
        )


def ts_text(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@app.command()
def init(
    directory: Path = typer.Argument(..., help="where to create the new PKI repo"),
    owner: list[str] = typer.Option([], "--owner", help="a code owner for .github/CODEOWNERS (@org/team, @user; repeat for more)"),
) -> None:
    """Create a PKI repo: example pki.yaml, policies/, .sops.yaml with a new age recipient, workflows, CODEOWNERS, git init."""
    from compiler.init import init_repo

    target = directory if directory.is_absolute() else _repo / directory
    info = init_repo(target, parse_now(None), owner)
    out.print(f"[green]Created[/] a PKI repo in [bold]{_escape(target)}[/]")
    out.print(f"  age recipient  {info['recipient']}")
    out.print(f"  identity added to {info['key_file']} (keep it secret; CI gets it as SOPS_AGE_KEY)")
    made = "made" if info["seal_key_created"] else "reused"
    out.print(f"  seal key {made}: {info['seal_key_file']} (keep it secret; CI gets it as PKIC_SEAL_KEY)")
    out.print(f"  seal public key {info['seal_public_key']} (recorded in out.seal)")
    if info["ci_install"]:
        out.print(f"  CI installs pkic as `{_escape(info['ci_install'])}` (.github/pkic-requirements.txt)")
    else:
        err.print(
            f"[yellow]CI cannot install pkic yet[/]: {_escape(info['ci_install_source'])}; write the requirement into .github/pkic-requirements.txt"
        )
    if info["owners_placeholder"]:
        err.print("[yellow]Replace the placeholder owner in .github/CODEOWNERS[/] (or run init with --owner @org/team)")
    out.print(f"Next: cd {_escape(target)} && pkic plan && pkic apply")


@app.command()
def plan(
    now: str | None = typer.Option(None, "--now", help=NOW_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
    fmt: str = typer.Option("text", "--format", help="text, json, or markdown (a pull request comment)"),
    save: Path | None = typer.Option(None, "--out", help="save the plan to this file, for `pkic apply FILE`"),
    detailed_exitcode: bool = typer.Option(False, "--detailed-exitcode", help="exit 0 with no changes, 2 with changes, 1 on error"),
    base: str | None = typer.Option(
        None,
        "--base",
        help="the pull request's target branch (e.g. origin/main): check out/ against the seal key recorded there, and show what the change does besides the PKI inputs",
    ),
    max_chars: int | None = typer.Option(
        None,
        "--max-chars",
        min=2000,
        help="markdown: cut long lists to fit (a GitHub comment holds 65,536); the digest still covers the full plan",
    ),
) -> None:
    """Show what apply would issue, reissue, renew or revoke, and why. Needs no secret."""
    from compiler.cli.render import plan_markdown, plan_text

    if fmt not in ("text", "json", "markdown"):
        raise PkicError(f"--format {fmt}: not a format", "use text, json or markdown")
    as_json = as_json or fmt == "json"

    sealed, findings = _seal_inspect(_repo, base)  # first: a forged out/ may not even load
    try:
        effective, _state, the_plan = _load(parse_now(now))
    except PkicError as exc:
        if sealed.problems:
            raise PkicError(sealed.problems + findings + exc.diagnostics) from None
        raise
    except Exception as exc:  # a bug, but on a forged out/ the reviewer must see why, not a crash
        if sealed.problems:
            raise PkicError(
                sealed.problems
                + findings
                + [Diagnostic("out/state.json", None, None, "", f"cannot be planned from ({type(exc).__name__})")]
            ) from None
        raise
    body = the_plan.to_json()
    body["seal"] = {**sealed.to_json(), "findings": [{"path": d.file, "message": d.message} for d in findings]}
    review = None
    if base is not None:
        from compiler.gitops import review_context

        review = review_context(_repo, base)
        body["review"] = review
    if save is not None:
        _write_out_file(save, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8"), "the plan")
    problems = sealed.problems + findings
    if as_json:
        _write_json(body)
    elif fmt == "markdown":
        from compiler.cli.render import seal_markdown

        sys.stdout.write(plan_markdown(the_plan, effective, review, seal_markdown(sealed, findings), max_chars))
    else:
        _show(plan_text(the_plan, effective))
        out.print(("[bold red]seal:[/] " if problems else "seal: ") + _escape(sealed.summary()))
        _sops_warning(sealed)
        if review and review["outside"]:
            out.print(
                f"[bold yellow]! not planned: review as code[/] ({len(review['outside'])} path(s) pkic does not plan; a workflow runs with the CA identity after merge): "
                + _escape(", ".join(review["outside"][:40]) + (" …" if len(review["outside"]) > 40 else ""))
            )
        if review and review["sops_rules_diff"]:
            out.print("[bold].sops.yaml, the rules as data:[/]\n" + _escape_lines(review["sops_rules_diff"]))
        for path, diff in sorted((review or {}).get("policy_diffs", {}).items()):
            out.print(f"[bold]{_escape(path)}:[/]\n" + _escape_lines(diff))
        if save is not None:
            out.print(f"Saved the plan to {_escape(save)}; apply exactly it with `pkic apply {_escape(save)}`.")
    if problems:
        # advisory on a pull request (its author can edit the workflow); apply enforces
        for d in problems:
            err.print(f"[bold red]error:[/] {_escape_lines(d.render())}")
        err.print("out/ is not the output the apply identity sealed: apply will refuse it. Review this change as an attack on the PKI.")
        raise typer.Exit(1)
    if detailed_exitcode and not the_plan.empty:
        raise typer.Exit(2)


def _sops_warning(report) -> None:
    """.sops.yaml decides who can decrypt every key pkic writes: a change since the last
    seal is shown to the reviewer, with the rule as it is now."""
    if report.sops_change is not None:
        out.print(
            "[bold yellow]! .sops.yaml: its creation rules changed since the last seal.[/] Every key written from now on "
            f"(new certificates, renewals, rekeys) is encrypted under: {_escape(report.sops_change)}"
        )


def _seal_inspect(repo: Path, base: str | None):
    """The seal as plan sees it, without a secret: checked against the recorded public key."""
    from compiler.state import examine, read_journal, recorded_public_key, sealed_findings

    public, source = recorded_public_key(repo, base)
    journal = read_journal(repo)
    journal_seal = journal[0].get("seal") if journal and isinstance(journal[0], dict) else None
    report = examine(repo, public, journal_seal=journal_seal)
    report.key_source = source
    return report, sealed_findings(repo, report)


@app.command()
def apply(
    plan_file: Path | None = typer.Argument(None, help="a plan saved by `pkic plan --out`; applied only if still current"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation (CI)"),
    now: str | None = typer.Option(None, "--now", help=NOW_HELP),
    commit: bool = typer.Option(False, "--commit", help="commit what changed in out/ in one commit with Pki-* trailers"),
    author: str | None = typer.Option(None, "--author", help="commit author, 'Name <email>' (default: git's config)"),
    reviewed: str | None = typer.Option(
        None,
        "--reviewed",
        help="the reviewed plan's Pki-Plan digest: refuse if the spec-driven part differs; 'none': there is no reviewed plan, do only time-driven work",
    ),
    time_travel: bool = typer.Option(
        False,
        "--time-travel",
        help="allow --now more than 5 minutes from this machine's clock: real certificates and CRLs dated then (tests, drills)",
    ),
) -> None:
    """Issue, renew, reissue and revoke as planned; write keys (SOPS), certificates and state to out/."""
    from compiler.apply import ApplyOptions, run_apply

    when = parse_now(now)
    _time_travel_gate(when, time_travel, settings.time_travel())
    options = ApplyOptions(when=when, plan_file=plan_file, yes=yes, reviewed=reviewed, commit=_GitCommit(author) if commit else None)
    applied = run_apply(_repo, options, _ApplyConsole())
    if applied is None:
        return
    result = applied.result
    parts = []
    if result.issued:
        parts.append(f"{len(result.issued)} issued")
        if result.workers:
            parts[-1] += f" ({result.signed_in_workers} signed in {result.workers} worker process{'es' if result.workers > 1 else ''})"
    if result.revoked:
        parts.append(f"{len(result.revoked)} revoked")
    if result.moved:
        parts.append(f"{len(result.moved)} moved")
    if result.reencrypted:
        parts.append(f"{len(result.reencrypted)} key file(s) re-encrypted")
    if result.ocsp_removed or result.responders_retired:
        parts.append(
            f"OCSP off: {result.ocsp_removed} published response(s) removed, {len(result.responders_retired)} responder(s) retired"
        )
    sealed = f"; sealed (seal serial {result.seal.serial})" if result.seal else ("; unsealed" if not applied.sealed else "")
    out.print(f"[green]Apply complete:[/] {', '.join(parts) or 'chain files updated'}; state serial {result.state_serial}{sealed}.")


class _ApplyConsole:
    """What `pkic apply` shows and asks (compiler.apply.Console)."""

    def recovered(self) -> None:
        err.print("[yellow]Finished an interrupted apply[/] (its steps were recovered from the journal).")

    def plan(self, plan, spec) -> None:
        from compiler.cli.render import plan_text

        _show(plan_text(plan, spec))

    def sealing(self, report) -> None:
        if report is not None:
            _sops_warning(report)
        else:
            out.print(
                "[yellow]seal: unsealed[/]: no seal key and no out.seal; nothing proves who wrote out/ (fine for local experiments; see docs/security.md)"
            )

    def confirm(self) -> None:
        if not sys.stdin.isatty():
            raise PkicError(
                "refusing to apply without confirmation: no terminal to ask on", "pass --yes (as CI does), or run it in a terminal"
            )
        if not typer.confirm("Apply these changes?", default=False):
            err.print("Cancelled; nothing was changed.")
            raise typer.Exit(1)


class _GitCommit:
    """`pkic apply --commit`: git and the audit of an unsealed out/ (compiler.apply.Commit)."""

    def __init__(self, author: str | None):
        self.author = author

    def preflight(self, csr_paths: list[str]) -> None:
        from compiler.gitops import preflight_commit

        preflight_commit(_repo, csr_paths, self.author)

    def hand_edits(self, state) -> list[str]:
        from compiler.verify import hand_edits

        return hand_edits(_repo, state)

    def check_attributes(self, paths: list[str]) -> None:
        from compiler.gitops import check_attributes

        check_attributes(_repo, paths)

    def commit(self, plan, state, result, recovered, seal, paths: list[str]) -> None:
        from compiler.gitops import commit_message, commit_out

        message = commit_message(plan, state, result, plan.reviewed_digest, recovered.ops if recovered else None, seal)
        done = commit_out(_repo, paths, message, self.author, seal)
        if done.sha:
            out.print(f"[green]Committed[/] {done.files} file(s) as {done.sha[:12]}: {_escape(message.splitlines()[0])}")
        else:
            out.print("Nothing to commit.")


@app.command()
def status(
    now: str | None = typer.Option(None, "--now", help=NOW_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the inventory as JSON"),
    all_: bool = typer.Option(False, "--all", help="include revoked certificates"),
) -> None:
    """The inventory: every certificate, its issuer, serial, validity and days left."""
    from compiler.cli.render import crl_rows, crl_table, status_plain, status_rows, status_table
    from compiler.state import load_with_journal

    state, _ = load_with_journal(_repo)
    when = parse_now(now)
    rows = status_rows(state, when)
    if not all_:
        rows = [r for r in rows if r["status"] != "revoked"]
    crls = crl_rows(state, when)  # each CRL records its refresh point: no need to load pki.yaml
    seal_line = _seal_status(_repo)
    if as_json:
        _write_json({"certificates": rows, "crls": crls, "state_serial": state.serial, "lineage": state.lineage, "seal": seal_line})
        return
    if not rows:
        out.print("No certificates issued yet. Run `pkic plan`, then `pkic apply`.")
        out.print(f"seal: {_escape(seal_line)}")
        return
    if len(rows) > 300:
        sys.stdout.write(status_plain(rows))
    else:
        out.print(status_table(rows))
    if crls:
        out.print(crl_table(crls))
    out.print(f"seal: {_escape(seal_line)}")
    for r in crls:
        if r["status"] == "expired":
            err.print(
                f"[bold red]CRL of {_escape(r['authority'])} EXPIRED at {_escape(r['next_update'])}: TLS clients that check CRLs reject every certificate it issued. Run `pkic apply` now.[/]"
            )
        elif r["status"] == "due":
            err.print(
                f"[yellow]CRL of {_escape(r['authority'])} is due for re-signing (next update {_escape(r['next_update'])}): run `pkic apply`.[/]"
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
) -> None:
    """Check out/: certificates match the state, chains lead to a trusted root, (--keys) keys match, (--seal) the seal holds."""
    from compiler.keys.keystore import Keystore
    from compiler.state import load_state
    from compiler.verify import verify_repo

    if check_seal or seal_key:
        from compiler.state import examine, parsed_seals, recorded_public_key, sealed_findings

        public, source = (seal_key, "--seal-key") if seal_key else recorded_public_key(_repo, base)
        report = examine(_repo, public)
        problems = report.problems + sealed_findings(_repo, report)
        if report.mode == "unsealed":
            raise PkicError("this repository is unsealed: no out.seal to verify", "`pkic seal init` seals it (see docs/security.md)")
        for d in problems:
            err.print(f"[bold red]✗[/] {_escape_lines(d.render())}")
        if problems:
            raise typer.Exit(1)
        versions = len({s.digest for _c, s in parsed_seals(report.git.history(_repo)) if public is not None and s.valid_under(public)})
        chain = f"{versions} seal(s) made with it in history form one chain" if versions else "no sealed commit yet"
        out.print(
            f"[green]✓[/] out/ is sealed: seal serial {report.seal.serial if report.seal else '?'}, key {_escape(public)} (from {_escape(source)}); {chain}."
        )
    state = load_state(_repo)
    count, findings = verify_repo(_repo, state, parse_now(now), Keystore(_repo) if keys else None)
    if not count:
        raise PkicError("nothing to verify: no certificate has been issued yet", "run `pkic apply` first")
    for f in findings:
        err.print(f"[bold red]✗[/] {_escape(f.name)}: {_escape(f.problem)}")
    if findings:
        raise typer.Exit(1)
    what = "certificates, chains, CRLs and keys" if keys else "certificates, chains and CRLs"
    out.print(f"[green]✓[/] {count} {what} verified.")


@app.command()
def check(
    warn: str = typer.Option("30d", "--warn", help="warn when a certificate expires within this (at most a third of its lifetime)"),
    critical: str = typer.Option("7d", "--critical", help="critical when anything expires within this (or a quarter of its lifetime)"),
    now: str | None = typer.Option(None, "--now", help=NOW_HELP),
    as_json: bool = typer.Option(False, "--json", help="print every item as JSON"),
    fmt: str = typer.Option("text", "--format", help="text, json, or prometheus (textfile collector)"),
    save: Path | None = typer.Option(None, "--out", help="write the output to this file (atomically; for textfile collectors)"),
) -> None:
    """Expiry monitoring: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios convention)."""
    from compiler import spec as spec_mod
    from compiler.check import LEVEL_NAMES, UNKNOWN, overall, prometheus, run_check, summary_line
    from compiler.model.durations import parse_duration
    from compiler.model.errors import printable
    from compiler.state import load_with_journal

    fmt = "json" if as_json else fmt
    if fmt not in ("text", "json", "prometheus"):
        raise PkicError(f"--format {fmt}: not a format", "use text, json or prometheus")
    try:
        try:
            warn_d, crit_d = parse_duration(warn), parse_duration(critical)
        except ValueError as exc:
            raise PkicError(str(exc)) from None
        when = parse_now(now)
        state, _ = load_with_journal(_repo)
        if state.lineage is None and not state.certificates:
            raise PkicError("nothing issued yet: no out/state.json", "run `pkic apply` first, or use -C DIR")
        try:
            effective = spec_mod.load(_repo)
        except PkicError:
            effective = None  # the state alone still tells what expires when
        items = run_check(state, effective, when, warn_d, crit_d)
        from compiler.check import CRITICAL, Item
        from compiler.verify import bundle_problem

        problem = bundle_problem(_repo, state) if state.active_names() else None
        if problem:  # what clients trust is not what the state says: worse than any expiry
            items.append(Item("bundle", "trust", None, "", CRITICAL, problem))
    except PkicError as exc:
        line = f"PKIC UNKNOWN - {exc.diagnostics[0].render().splitlines()[0]}"
        if fmt == "json":
            _write_json({"status": "UNKNOWN", "code": UNKNOWN, "summary": line, "items": []})
        else:
            out.print(_escape(line))
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

        target = save if save.is_absolute() else _repo / save
        try:
            write_atomic(target.parent, target.name, text.encode())
        except OSError as exc:
            raise fail(str(save), f"cannot write: {exc.strerror}") from None
        out.print(_escape(summary))
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

    events = git_history(_repo, name)
    if as_json:
        _write_json({"name": name, "events": events})
        return
    if not events:
        out.print(f"No history for '{_escape(name)}' (pkic apply --commit records it in git).")
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
    fmt: str = typer.Option("mermaid", "--format", help="mermaid or dot"),
) -> None:
    """The hierarchy as a Mermaid or Graphviz diagram."""
    from compiler import graph as graph_mod
    from compiler import spec as spec_mod

    effective = spec_mod.load(_repo)
    revoked = {n for n, e in effective.entries.items() if e.revoke}
    if fmt == "mermaid":
        sys.stdout.write(graph_mod.mermaid(effective, revoked))
    elif fmt == "dot":
        sys.stdout.write(graph_mod.dot(effective, revoked))
    else:
        raise PkicError(f"--format {fmt}: not a format", "use mermaid or dot")


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

    state, _ = load_with_journal(_repo)
    try:
        effective = spec_mod.load(_repo)
    except PkicError:
        effective = None
    html = render_report(state, effective, recent_commits(_repo), parse_now(now))
    _write_out_file(save, html.encode("utf-8"), "the report")
    out.print(f"[green]Wrote[/] {_escape(save)} ({len(html) // 1024} KiB, self-contained).")


@app.command()
def serve(
    port: int = typer.Option(8080, "--port", help="TCP port"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    timeout: float = typer.Option(
        10.0,
        "--timeout",
        min=0.1,
        max=3600,
        help="seconds a connection has to send its whole request (and to take each write of the answer)",
    ),
    threads: int = typer.Option(32, "--threads", min=1, max=1024, help="worker threads answering complete requests"),
    max_connections: int = typer.Option(
        512,
        "--max-connections",
        min=1,
        max=65536,
        help="open connections at most; past it the oldest one still sending its request is closed",
    ),
) -> None:
    """Serve out/ over HTTP: CRLs, certificates, and pre-signed OCSP responses (no key needed)."""
    from compiler.serve import make_server

    if not (_repo / "out").is_dir():
        raise PkicError("no out/ directory here: nothing to serve", "run `pkic apply` first, or use -C DIR")
    try:
        server = make_server(
            _repo, host, port, lambda line: err.print(_escape(line)), timeout=timeout, threads=threads, max_connections=max_connections
        )
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise fail(f"{host}:{port}", f"cannot listen: {reason}", "pick another --port (1-65535)") from None
    err.print(f"pkic serve: http://{host}:{server.server_address[1]}/ (CRLs under /crl/, certificates under /certs/, OCSP at / and /ocsp)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


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


seal_app = typer.Typer(no_args_is_help=True, help="The seal over out/: adopt an existing repository, or rotate the seal key.")
app.add_typer(seal_app, name="seal")


@seal_app.command("init")
def seal_init(
    rotate: bool = typer.Option(False, "--rotate", help="replace a seal made with another seal key (after that key leaked or was lost)"),
    old_key_file: Path | None = typer.Option(
        None,
        "--old-key-file",
        help="with --rotate: the previous seal key, to endorse the new one (plan and verify then follow the rotation)",
    ),
    now: str | None = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Seal out/ as it is now, once `verify --keys` passes: adopting an unsealed repository (trust on first use), or rotating the seal key."""
    from compiler import layout
    from compiler.keys.keystore import Keystore
    from compiler.state import (
        MAX_SEAL,
        RepoLock,
        Report,
        examine,
        load_key,
        load_state,
        parse_key,
        parse_seal,
        public_text,
        read_journal,
        scan_out,
        seal_key_file,
        write_seal,
    )
    from compiler.verify import verify_repo

    key = load_key()
    if key is None:
        raise PkicError(
            "no seal key: set PKIC_SEAL_KEY or PKIC_SEAL_KEY_FILE",
            f"make one with `pkic init` in a scratch directory, or put it at {seal_key_file()}",
        )
    public = public_text(key.public_key())
    when = parse_now(now)
    with RepoLock(_repo):
        if read_journal(_repo):
            raise PkicError("an interrupted apply is pending", "run `pkic apply` first; it finishes it")
        report = examine(_repo, public)
        if not report.problems and report.mode == "sealed":
            out.print(f"out/ is already sealed with this key ({public}); nothing to do.")
            return
        git = report.git
        head_raw = git.blob(_repo, f"HEAD:{layout.SEAL_PATH}")
        disk_raw = layout.read_file(_repo, layout.SEAL_PATH, MAX_SEAL + 1)
        earlier = [parse_seal(r) for r in (head_raw, disk_raw) if r is not None]
        if any(s.public_key != public for s in earlier) and not rotate:
            raise PkicError(
                f"out.seal is made with another seal key ({earlier[0].public_key}), not this one ({public})",
                "pass --rotate to replace it (see docs/security.md: rotating the seal key); check first that out/ is the one you trust",
            )
        endorse = None
        if old_key_file is not None:
            if not rotate:
                raise PkicError("--old-key-file goes with --rotate")
            try:
                endorse = parse_key(old_key_file.read_text(encoding="ascii"), str(old_key_file))
            except (OSError, UnicodeDecodeError) as exc:
                raise fail(str(old_key_file), f"cannot read the old seal key: {exc}") from None
            old_public = public_text(endorse.public_key())
            if earlier and earlier[-1].public_key != old_public:
                raise fail(
                    str(old_key_file),
                    f"is not the key of the current seal ({earlier[-1].public_key})",
                    "pass the seal key that made out.seal",
                )
        state = load_state(_repo)
        count, findings = verify_repo(_repo, state, when, Keystore(_repo))
        if findings:
            raise PkicError(
                [
                    Diagnostic(f.name, None, None, "", f.problem, "seal only an out/ that verifies: restore it from git")
                    for f in findings[:20]
                ]
            )
        fresh = Report(git=git, head_seal=parse_seal(head_raw) if head_raw else None, seal=parse_seal(disk_raw) if disk_raw else None)
        made = write_seal(
            _repo,
            key,
            fresh,
            scan_out(_repo, git.object_format),
            lineage=state.lineage,
            state_serial=state.serial,
            at=ts(when),
            endorse_with=endorse,
        )
    out.print(f"[green]Sealed[/] out/ ({count} certificate(s) verified with their keys): seal serial {made.serial}, key {public}.")
    if rotate and endorse is None and earlier:
        err.print(
            "[yellow]This rotation is not endorsed by the previous key[/] (no --old-key-file): plan and verify --seal without a "
            "secret keep checking against the old key; give them --seal-key NEW (or a --base after this commit)."
        )
    out.print("Commit out.seal in a pull request; reviewers check that the key above is the one in PKIC_SEAL_KEY.")


@app.command()
def validate() -> None:
    """Check pki.yaml, policies/, CSRs and .sops.yaml alone: fast, no state, no secret (pre-commit, PR checks)."""
    from compiler import spec as spec_mod
    from compiler.plan import check_horizon
    from compiler.policy import rules as policy
    from compiler.spec.sops_config import creation_rules

    diags: list[Diagnostic] = []
    effective = None
    try:
        effective = spec_mod.load(_repo)
        policy.check_all(effective, _repo)
        check_horizon(effective, parse_now(None))
    except PkicError as exc:
        diags += exc.diagnostics
    try:
        rules = creation_rules(_repo)
    except PkicError as exc:
        diags += exc.diagnostics
    if diags:
        raise PkicError(diags)
    assert effective is not None
    sops = "no .sops.yaml (pkic init writes one)" if rules is None else f".sops.yaml has {len(rules)} creation rule(s)"
    out.print(f"[green]✓[/] pki.yaml is valid: {len(effective.entries)} entries; every policy holds; {sops}.")


@app.command()
def csr(
    name: str = typer.Argument(..., help="the certificate in pki.yaml to make a key and CSR for"),
    key_out: Path = typer.Option(..., "--key-out", help="where to write the new private key (on the host, never inside the repo)"),
    csr_out: Path | None = typer.Option(None, "--csr-out", help="where to write the CSR (default csrs/<name>.csr.pem in the repo)"),
) -> None:
    """Host side: generate a key and a CSR for a certificate in the spec; the key stays here."""
    from compiler import layout
    from compiler import spec as spec_mod
    from compiler.keys.keystore import write_csr_outside, write_host_key

    effective = spec_mod.load(_repo)
    entry = effective.entries.get(name)
    if entry is None or entry.kind != "certificate":
        raise PkicError(f"'{name}' is not a certificate in pki.yaml", "pkic csr makes keys for leaf certificates")
    repo_real = _repo.resolve()
    key_target = key_out.resolve()
    if key_target.is_relative_to(repo_real):
        raise fail(
            str(key_out),
            "refusing to write a private key inside the repo",
            "write it on the host that uses it, e.g. --key-out /etc/ssl/private/web.key",
        )
    if key_out.is_symlink() or key_target.exists():
        raise fail(
            str(key_out), "exists: refusing to overwrite a key (or to follow a symlink)", "pick a new path, or remove the old key yourself"
        )
    csr_rel = csr_out or Path("csrs") / f"{name}.csr.pem"
    # the CSR goes into the repo: never through a symlink there (checked before the key is made)
    csr_in_repo: str | None = None
    if not csr_rel.is_absolute():
        csr_in_repo = csr_rel.as_posix()
    elif os.path.abspath(csr_rel).startswith(str(repo_real).rstrip("/") + "/"):
        csr_in_repo = os.path.relpath(os.path.abspath(csr_rel), repo_real)
    if csr_in_repo is not None:
        if csr_in_repo.startswith(("../", "/")) or "/../" in f"/{csr_in_repo}/":
            raise fail(str(csr_rel), "is not a path inside the repository", "use csrs/<name>.csr.pem")
        layout.check_input_target(_repo, csr_in_repo)
    elif csr_rel.is_symlink():
        raise fail(str(csr_rel), "is a symlink: pkic csr never writes through one", "remove it, or pick another --csr-out")
    pem = write_host_key(entry, key_target)
    if csr_in_repo is not None:
        layout.write_input(_repo, csr_in_repo, pem)
    else:
        write_csr_outside(csr_rel, pem)
    out.print(f"[green]Wrote[/] the key to {_escape(key_out)} (mode 0600; it never goes into the repo) and the CSR to {_escape(csr_rel)}")
    out.print(f"Next: add `csr: {_escape(csr_rel)}` to certificates.{name} in pki.yaml, commit the CSR, and open a pull request.")


from compiler.cli.ci import ci_app  # noqa: E402  (the `pkic ci` commands: compiler/cli_ci.py)

app.add_typer(ci_app, name="ci")


def main(argv: list[str] | None = None) -> int:
    # A run builds large trees of short-lived, acyclic objects (a 10,000-leaf spec is
    # ~300,000 containers). With the default thresholds the cyclic collector ran
    # hundreds of times over them and took a third of a no-op plan; reference counting
    # frees them anyway. A high first threshold keeps the collector for real cycles
    # (and for the long-running `pkic serve`) at a fraction of the cost.
    gc.set_threshold(100_000, 50, 100)
    try:
        rc = app(args=argv, standalone_mode=False)
        if rc == 130:  # typer turns Ctrl-C into this return value
            err.print("Interrupted. Steps already done are recorded; `pkic plan` shows what is left.")
        return rc if isinstance(rc, int) else 0
    except PkicError as exc:
        from compiler.spec import locate

        for d in locate(_repo, exc.diagnostics):
            err.print(f"[bold red]error:[/] {_escape_lines(d.render())}")
        if len(exc.diagnostics) > 1:
            err.print(f"{len(exc.diagnostics)} problems found; nothing was changed.")
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("Interrupted. Steps already done are recorded; `pkic plan` shows what is left.")
        return 130
    except Exception as exc:  # usage errors and crashes
        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return 1
        exit_type = getattr(click.exceptions, "Exit", None)
        if exit_type is not None and isinstance(exc, exit_type):
            return exc.exit_code
        # a fresh file: O_EXCL (never through a planted symlink), mode 0600, a name nobody can guess
        import tempfile

        try:
            fd, name = tempfile.mkstemp(prefix="pkic-crash-", suffix=".log")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(traceback.format_exc())
            log: Path | str = name
        except OSError:
            log = "(no log: the temporary directory is not writable)"
        err.print(f"[bold red]pkic crashed:[/] {type(exc).__name__}. This is a bug in pkic, not in your input; details in {_escape(log)}")
        return 3
    return 0


def _write_out_file(path: Path, data: bytes, what: str) -> None:
    """``--out FILE``: never written through a symlink. A relative path is inside the repo
    (which a pull request writes): no component of it may be a symlink, and no '..'."""
    from compiler import layout

    try:
        if path.is_absolute():  # an absolute path into the repo is a path in the repo
            for base in (os.path.abspath(_repo), os.path.realpath(_repo)):
                if os.path.abspath(path).startswith(base.rstrip("/") + "/"):
                    path = Path(os.path.relpath(os.path.abspath(path), base))
                    break
        if not path.is_absolute():
            rel = path.as_posix()
            if ".." in path.parts or not rel or rel == ".":
                raise fail(str(path), "is not a file path inside the repository", "pass a path like plan.json, or an absolute one")
            if not (_repo / path).parent.is_dir():
                raise FileNotFoundError(errno.ENOENT, "No such file or directory")
            layout.write_input(_repo, rel, data)
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise fail(str(path), f"is a symlink: pkic never writes {what} through one", "remove it, or pick another path") from None
            raise
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise fail(str(path), f"cannot write {what}: {exc.strerror}", "pass a file path in an existing directory") from None


def _write_json(body: dict) -> None:
    sys.stdout.write(json.dumps(body, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def _show(renderable) -> None:
    """Print a rendering. Rich lays out about 20,000 lines a second, so a 10,000-change
    plan in a CI log (no terminal, so no colour) is written as its plain text instead."""
    from rich.console import Group
    from rich.text import Text

    if out.color_system is None and isinstance(renderable, Group) and all(isinstance(r, Text) for r in renderable.renderables):
        sys.stdout.write("".join(t.plain + "\n" for t in renderable.renderables))
        sys.stdout.flush()
    else:
        out.print(renderable)


def _escape(text: object) -> str:
    """A value for rich's markup, on one line: shown as the text it is (``[bold]`` with its
    brackets, never interpreted), control characters as their escapes (``\\n``, ``\\x1b``)."""
    from rich.markup import escape

    from compiler.model.errors import printable

    return escape(printable(str(text)))


def _escape_lines(text: str) -> str:
    """Like _escape, for text whose lines are its own (a diff, a diagnostic and its hint)."""
    return "\n".join(_escape(line) for line in text.split("\n"))


if __name__ == "__main__":
    sys.exit(main())
