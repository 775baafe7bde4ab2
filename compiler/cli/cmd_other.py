"""`pkic serve`, `pkic seal …` and `pkic csr`: publishing out/, the seal's key, and a host's own key and CSR."""

from __future__ import annotations

from pathlib import Path

import typer

from compiler import serve_http
from compiler.cli.app import NOW_HELP, app, err, escape, opts, out, parse_now, repo_relative
from compiler.model.errors import Diagnostic, PkicError, fail
from compiler.state import ts


@app.command()
def serve(
    port: int = typer.Option(8080, "--port", help="TCP port"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    timeout: float = typer.Option(
        serve_http.TIMEOUT,
        "--timeout",
        min=0.1,
        max=3600,
        help="seconds a connection has to send its whole request (and to take each write of the answer)",
    ),
    threads: int = typer.Option(serve_http.THREADS, "--threads", min=1, max=1024, help="worker threads answering complete requests"),
    max_connections: int = typer.Option(
        serve_http.MAX_CONNECTIONS,
        "--max-connections",
        min=1,
        max=65536,
        help="open connections at most; past it the oldest one still sending its request is closed",
    ),
) -> None:
    """Serve out/ over HTTP: CRLs, certificates, and pre-signed OCSP responses (no key needed)."""
    from compiler.serve import make_server

    if not (opts.repo / "out").is_dir():
        raise PkicError("no out/ directory here: nothing to serve", "run `pkic apply` first, or use -C DIR")
    try:
        server = make_server(
            opts.repo, host, port, lambda line: err.print(escape(line)), timeout=timeout, threads=threads, max_connections=max_connections
        )
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise fail(f"{host}:{port}", f"cannot listen: {reason}", "pick another --port (1-65535)") from None
    err.print(f"pkic serve: http://{host}:{server.server_address[1]}/ (CRLs under /crl/, certificates under /certs/, OCSP at / and /ocsp)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


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
    with RepoLock(opts.repo):
        if read_journal(opts.repo):
            raise PkicError("an interrupted apply is pending", "run `pkic apply` first; it finishes it")
        report = examine(opts.repo, public)
        if not report.problems and report.mode == "sealed":
            out.print(f"out/ is already sealed with this key ({public}); nothing to do.")
            return
        git = report.git
        head_raw = git.blob(opts.repo, f"HEAD:{layout.SEAL_PATH}")
        disk_raw = layout.read_file(opts.repo, layout.SEAL_PATH, MAX_SEAL + 1)
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
        state = load_state(opts.repo)
        count, findings = verify_repo(opts.repo, state, when, Keystore(opts.repo))
        if findings:
            raise PkicError(
                [
                    Diagnostic(f.name, None, None, "", f.problem, "seal only an out/ that verifies: restore it from git")
                    for f in findings[:20]
                ]
            )
        fresh = Report(git=git, head_seal=parse_seal(head_raw) if head_raw else None, seal=parse_seal(disk_raw) if disk_raw else None)
        made = write_seal(
            opts.repo,
            key,
            fresh,
            scan_out(opts.repo, git.object_format),
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
def csr(
    name: str = typer.Argument(..., help="the certificate in pki.yaml to make a key and CSR for"),
    key_out: Path = typer.Option(..., "--key-out", help="where to write the new private key (on the host, never inside the repo)"),
    csr_out: Path | None = typer.Option(None, "--csr-out", help="where to write the CSR (default csrs/<name>.csr.pem in the repo)"),
) -> None:
    """Host side: generate a key and a CSR for a certificate in the spec; the key stays here."""
    from compiler import layout
    from compiler import spec as spec_mod
    from compiler.keys.keystore import write_csr_outside, write_host_key

    effective = spec_mod.load(opts.repo)
    entry = effective.entries.get(name)
    if entry is None or entry.kind != "certificate":
        raise PkicError(f"'{name}' is not a certificate in pki.yaml", "pkic csr makes keys for leaf certificates")
    repo_real = opts.repo.resolve()
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
    csr_in_repo = repo_relative(csr_rel)
    if csr_in_repo is not None:
        if csr_in_repo.startswith(("../", "/")) or "/../" in f"/{csr_in_repo}/":
            raise fail(str(csr_rel), "is not a path inside the repository", "use csrs/<name>.csr.pem")
        layout.check_input_target(opts.repo, csr_in_repo)
    elif csr_rel.is_symlink():
        raise fail(str(csr_rel), "is a symlink: pkic csr never writes through one", "remove it, or pick another --csr-out")
    pem = write_host_key(entry, key_target)
    if csr_in_repo is not None:
        layout.write_input(opts.repo, csr_in_repo, pem)
    else:
        write_csr_outside(csr_rel, pem)
    out.print(f"[green]Wrote[/] the key to {escape(key_out)} (mode 0600; it never goes into the repo) and the CSR to {escape(csr_rel)}")
    out.print(f"Next: add `csr: {escape(csr_rel)}` to certificates.{name} in pki.yaml, commit the CSR, and open a pull request.")
