"""`pkic init`, `pkic plan` and `pkic apply`: the commands that make and carry out a plan."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

from compiler import settings
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
    show,
    ts_text,
    write_json,
    write_out_file,
)
from compiler.model.errors import Diagnostic, PkicError, fail

if TYPE_CHECKING:
    from compiler.apply import ApplyResult, Recovery
    from compiler.plan import Plan
    from compiler.spec import EffectiveSpec
    from compiler.state import Report, Seal, State


def _load(now: datetime, mac_key: bytes | None) -> tuple[EffectiveSpec, State, Plan]:
    """``mac_key``: this machine's apply caches, where the seal key is (see state.cache_key);
    None: plan's own (see spec.cache.Verdicts)."""
    from compiler import spec as spec_mod
    from compiler.apply import reviewed_inputs
    from compiler.plan import make_plan
    from compiler.policy import rules as policy
    from compiler.spec.cache import Verdicts
    from compiler.spec.loading import PLAN_CACHES
    from compiler.state import load_with_journal

    effective = spec_mod.load(opts.repo, caches=PLAN_CACHES if mac_key is None else mac_key)
    state, _ops = load_with_journal(opts.repo, Verdicts(opts.repo, mac_key))
    policy.check_all(effective, opts.repo, state)
    reviewed_inputs(opts.repo, effective)
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


@app.command()
def init(
    directory: Path = typer.Argument(..., help="where to create the new PKI repo"),
    owner: list[str] = typer.Option([], "--owner", help="a code owner for .github/CODEOWNERS (@org/team, @user; repeat for more)"),
) -> None:
    """Create a PKI repo: example pki.yaml, policies/, .sops.yaml with a new age recipient, workflows, CODEOWNERS, git init."""
    from compiler.init import init_repo

    target = directory if directory.is_absolute() else opts.repo / directory
    info = init_repo(target, parse_now(None), owner)
    out.print(f"[green]Created[/] a PKI repo in [bold]{escape(target)}[/]")
    out.print(f"  age recipient  {info['recipient']}")
    out.print(f"  identity added to {info['key_file']} (keep it secret; CI gets it as SOPS_AGE_KEY)")
    made = "made" if info["seal_key_created"] else "reused"
    out.print(f"  seal key {made}: {info['seal_key_file']} (keep it secret; CI gets it as PKIC_SEAL_KEY)")
    out.print(f"  seal public key {info['seal_public_key']} (recorded in out.seal)")
    if info["ci_install"]:
        out.print(f"  CI installs pkic as `{escape(info['ci_install'])}` (.github/pkic-requirements.txt)")
    else:
        err.print(
            f"[yellow]CI cannot install pkic yet[/]: {escape(info['ci_install_source'])}; write the requirement into .github/pkic-requirements.txt"
        )
    if info["owners_placeholder"]:
        err.print("[yellow]Replace the placeholder owner in .github/CODEOWNERS[/] (or run init with --owner @org/team)")
    out.print(f"Next: cd {escape(target)} && pkic plan && pkic apply")


@app.command()
def plan(
    now: str | None = typer.Option(None, "--now", help=NOW_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON (the same as --format json)"),
    fmt: Literal["text", "json", "markdown"] = typer.Option("text", "--format", help="text, json, or markdown (a pull request comment)"),
    save: Path | None = typer.Option(
        None, "--save", "--out", metavar="FILE", help="save the plan to this file, for `pkic apply FILE` (--out: the older name)"
    ),
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
    from compiler.cli.markdown import plan_markdown
    from compiler.cli.render import plan_text

    output_format(as_json, fmt)
    as_json = as_json or fmt == "json"

    from compiler.state import cache_key

    mac_key = cache_key()  # (None in a pull request's CI: plan needs no secret)
    sealed, findings = _seal_inspect(opts.repo, base, mac_key)  # first: a forged out/ may not even load
    try:
        effective, _state, the_plan = _load(parse_now(now), mac_key)
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

        review = review_context(opts.repo, base)
        body["review"] = review
    if save is not None:
        write_out_file(save, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8"), "the plan")
    problems = sealed.problems + findings
    if as_json:
        write_json(body)
    elif fmt == "markdown":
        from compiler.cli.markdown import seal_markdown

        sys.stdout.write(plan_markdown(the_plan, effective, review, seal_markdown(sealed, findings), max_chars))
    else:
        show(plan_text(the_plan, effective))
        out.print(("[bold red]seal:[/] " if problems else "seal: ") + escape(sealed.summary()))
        _sops_warning(sealed)
        if review and review["outside"]:
            out.print(
                f"[bold yellow]! not planned: review as code[/] ({len(review['outside'])} path(s) pkic does not plan; a workflow runs with the CA identity after merge): "
                + escape(", ".join(review["outside"][:40]) + (" …" if len(review["outside"]) > 40 else ""))
            )
        if review and review["sops_rules_diff"]:
            out.print("[bold].sops.yaml, the rules as data:[/]\n" + escape_lines(review["sops_rules_diff"]))
        for path, diff in sorted(review["policy_diffs"].items() if review else []):
            out.print(f"[bold]{escape(path)}:[/]\n" + escape_lines(diff))
        if save is not None:
            out.print(f"Saved the plan to {escape(save)}; apply exactly it with `pkic apply {escape(save)}`.")
    if problems:
        # advisory on a pull request (its author can edit the workflow); apply enforces
        for d in problems:
            err.print(f"[bold red]error:[/] {escape_lines(d.render())}")
        err.print("out/ is not the output the apply identity sealed: apply will refuse it. Review this change as an attack on the PKI.")
        raise typer.Exit(1)
    if detailed_exitcode and not the_plan.empty:
        raise typer.Exit(2)


def _sops_warning(report: Report) -> None:
    """.sops.yaml decides who can decrypt every key pkic writes: a change since the last
    seal is shown to the reviewer, with the rule as it is now."""
    if report.sops_change is not None:
        out.print(
            "[bold yellow]! .sops.yaml: its creation rules changed since the last seal.[/] Every key written from now on "
            f"(new certificates, renewals, rekeys) is encrypted under: {escape(report.sops_change)}"
        )


def _seal_inspect(repo: Path, base: str | None, mac_key: bytes | None) -> tuple[Report, list[Diagnostic]]:
    """The seal as plan sees it, without a secret: checked against the recorded public key.
    ``mac_key``: the scan's record of blob ids is apply's (see state.cache_key)."""
    from compiler.state import BlobMemo, examine, read_journal, recorded_public_key, sealed_findings

    public, source = recorded_public_key(repo, base)
    journal = read_journal(repo)
    journal_seal = journal[0].get("seal") if journal and isinstance(journal[0], dict) else None
    report = examine(repo, public, journal_seal=journal_seal, memo=BlobMemo(repo, mac_key))  # plan's own, or apply's (see scan_out)
    report.key_source = source
    findings = sealed_findings(repo, report)
    report.listing = None  # (300,000 files at W100k: plan has said what it had to say of them)
    return report, findings


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
    applied = run_apply(opts.repo, options, _ApplyConsole())
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

    def plan(self, plan: Plan, spec: EffectiveSpec) -> None:
        from compiler.cli.render import plan_text

        show(plan_text(plan, spec))

    def sealing(self, report: Report | None) -> None:
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

        preflight_commit(opts.repo, csr_paths, self.author)

    def hand_edits(self, state: State) -> list[str]:
        from compiler.verify import hand_edits

        return hand_edits(opts.repo, state)

    def check_attributes(self, paths: list[str]) -> None:
        from compiler.gitops import check_attributes

        check_attributes(opts.repo, paths)

    def commit(
        self, plan: Plan, state: State, result: ApplyResult, recovered: Recovery | None, seal: Seal | None, paths: list[str]
    ) -> None:
        from compiler.gitops import commit_message, commit_out

        message = commit_message(plan, state, result, plan.reviewed_digest, recovered.ops if recovered else None, seal)
        done = commit_out(opts.repo, paths, message, self.author, seal)
        if done.sha:
            out.print(f"[green]Committed[/] {done.files} file(s) as {done.sha[:12]}: {escape(message.splitlines()[0])}")
        else:
            out.print("Nothing to commit.")
