"""Hostile input is escaped for every output it reaches (issue 12, item 6).

A table: each payload, from each source that can carry it, through each renderer it
reaches. Sources are what a pull request can write (a subject in pki.yaml, a URI SAN, a
crl_url, a CSR's extra SAN, out/state.json, out.seal, a commit message) and the apply
journal (.pkic/journal.jsonl: this machine's own file, refused when committed; it is
folded into the state unchecked, so it stands for "any string field of the state",
including those state.json's own checks refuse). Renderers are the markdown plan and
the pull request comment built from it, the text plan, the HTML report, status, check,
history, verify and graph.

Each output format has its own rule:

* markdown: no raw HTML of the payload's (``<img``, ``</details>``, ``<!--``), no code
  span left open, no table row split or cut short; the payload shows escaped;
* HTML: no tag or comment but the report's own; the payload shows escaped;
* text and rich (the terminal, CI logs): rich markup is shown as the literal text it is
  (``[bold]x[/bold]`` is printed with its brackets), control characters (a newline that
  would forge a line, an ANSI escape) are shown escaped (``\\n``, ``\\x1b``);
* mermaid and dot: only names, kinds and key types are shown; names are validated
  (refused: entry-name), and a label is still escaped for its syntax past validation.

Where validation refuses a payload before it can reach a renderer (a newline in a URI,
any of them in an entry name or in a CRL number in state.json), the refusal is asserted
instead, and its error shows the payload escaped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import NOW, Pkic, make_pkic

pytest.register_assert_rewrite("seclib")
from seclib import git, read_state, write_state  # noqa: E402

pytest_plugins = ["seclib"]  # the template fixture

PAYLOADS = {
    "img": "<img src=x onerror=alert(1)>",
    "img-nospace": "<img/src=x/onerror=alert(1)>",  # the same, where whitespace is refused (URIs)
    "details": "</details>",
    "bold": "[bold]x[/bold]",
    "link": "[link=https://evil]x[/link]",
    "pipe": "a|b",
    "newline": "a\nb",
    "backtick": "a`b",
    "comment": "<!--",
    "quote": '" onmouseover="alert(1)',
    "ansi": "\x1b[8mhidden",  # ESC [8m: the terminal hides what follows
}

# How each payload must show, per output format (hand-written: what a reader must see).
TEXT_FORM = dict(PAYLOADS) | {"newline": "a\\nb", "ansi": "\\x1b[8mhidden"}
MD_FORM = {
    "img": "&lt;img src=x onerror=alert(1)&gt;",
    "img-nospace": "&lt;img/src=x/onerror=alert(1)&gt;",
    "details": "&lt;/details&gt;",
    "bold": "\\[bold\\]x\\[/bold\\]",
    "link": "\\[link=https://evil\\]x\\[/link\\]",
    "pipe": "a\\|b",
    "newline": "a\\\\nb",  # the markdown source `a\\nb` reads a\nb
    "backtick": "a&#96;b",
    "comment": "&lt;!--",
    "quote": '" onmouseover="alert(1)',
    "ansi": "\\\\x1b\\[8mhidden",
}
HTML_FORM = dict(PAYLOADS) | {
    "img": "&lt;img src=x onerror=alert(1)&gt;",
    "img-nospace": "&lt;img/src=x/onerror=alert(1)&gt;",
    "details": "&lt;/details&gt;",
    "comment": "&lt;!--",
    "quote": "&quot; onmouseover=&quot;alert(1)",
}
REPORT_TAGS = {"!doctype", "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "code", "time", "ul", "li", "strong",
               "span", "svg", "line", "text", "rect", "table", "thead", "tbody", "tr", "th", "td", "i"}
MD_TAGS = {"br", "sub", "code", "details", "summary"}
RUN, HEAD = 4242, "0123456789abcdef0123456789abcdef01234567"


def spaced(p: str) -> bool:
    return any(c.isspace() for c in p)


def unprintable(p: str) -> bool:
    return not p.isprintable()


# --------------------------------------------------------------------------- sources
#
# A source writes payloads into a repository copied from the base (the applied template
# and, with ``base``, one client certificate e-KEY per payload, applied and committed).
# A ``multi`` source writes every payload it accepts into one repository, each in its own
# place (e-KEY's subject, a CSR's SAN list, a journal record named after it...); the
# others get one repository per payload (a state file has one CRL number per authority).


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def _yaml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def subject(repo: Path, payloads: dict, env: dict) -> None:
    for k, p in payloads.items():
        _edit(repo / "pki.yaml", f"subject: {{CN: e-{k}}}", f"subject: {{CN: e-{k}, O: {_yaml(p)}}}")


def uri_san(repo: Path, payloads: dict, env: dict) -> None:
    for k, p in payloads.items():
        _edit(repo / "pki.yaml", f"uri: [https://e.example/e-{k}]", f"uri: [{_yaml('https://e.example/' + p)}]")


def crl_url(repo: Path, payloads: dict, env: dict) -> None:
    (p,) = payloads.values()  # an authority has one
    _edit(repo / "pki.yaml", "    path_length: 0\n", f"    path_length: 0\n    crl_url: {_yaml('http://crl.example/' + p)}\n")


def csr_san(repo: Path, payloads: dict, env: dict) -> None:
    """A CSR for api that also asks for every payload as a DNS name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    names = [x509.DNSName("api.example.com")] + [x509.DNSName(p) for p in payloads.values()]
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName(names), critical=False)
           .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    (repo / "csrs").mkdir(exist_ok=True)
    (repo / "csrs" / "api.csr.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    with (repo / "pki.yaml").open("a") as fh:
        fh.write("  api:\n    issuer: services-ca\n    dns: [api.example.com]\n    csr: csrs/api.csr.pem\n")


def entry_name(repo: Path, payloads: dict, env: dict) -> None:
    with (repo / "pki.yaml").open("a") as fh:
        for p in payloads.values():
            fh.write(f"  {_yaml(p)}:\n    issuer: services-ca\n    dns: [api.example.com]\n")


def state_settings(repo: Path, payloads: dict, env: dict) -> None:
    (p,) = payloads.values()
    body = read_state(repo)
    body["settings"]["authorities"]["root-ca"]["ocsp_signer"] = p
    write_state(repo, body)


def state_crl_number(repo: Path, payloads: dict, env: dict) -> None:
    (p,) = payloads.values()
    body = read_state(repo)
    body["crls"]["root-ca"]["number"] = p
    write_state(repo, body)


def state_revocation_reason(repo: Path, payloads: dict, env: dict) -> None:
    body = read_state(repo)
    for k, p in payloads.items():
        body["certificates"][f"e-{k}"][0].update(status="revoked", revoked_at=NOW, revocation_reason=p)
    write_state(repo, body)


def _journal(repo: Path, ops: list[dict]) -> None:
    begin = {"op": "begin", "lineage": read_state(repo)["lineage"], "base_serial": 1, "plan": "0" * 64, "at": NOW}
    (repo / ".pkic").mkdir(exist_ok=True)
    (repo / ".pkic" / "journal.jsonl").write_text("".join(json.dumps(op) + "\n" for op in [begin, *ops]))


def journal_crl_number(repo: Path, payloads: dict, env: dict) -> None:
    info = read_state(repo)["crls"]["root-ca"]
    _journal(repo, [{"op": "crl", "authority": f"ca-{k}", "info": {**info, "number": p}, "at": NOW} for k, p in payloads.items()])


def journal_record(repo: Path, payloads: dict, env: dict) -> None:
    """A certificate record named after each payload, with it as its issuer, expiring
    tomorrow (so that check names it)."""
    web = {**read_state(repo)["certificates"]["web"][0], "not_before": "2026-08-29T12:00:00Z", "not_after": "2026-11-28T12:00:00Z"}
    _journal(repo, [{"op": "issued", "name": p, "record": {**web, "name": p, "issuer": p, "serial": f"abc{i}"}, "at": NOW}
                    for i, p in enumerate(payloads.values())])


def seal_format(repo: Path, payloads: dict, env: dict) -> None:
    (p,) = payloads.values()
    body = json.loads((repo / "out.seal").read_text())
    body["format"] = p
    (repo / "out.seal").write_text(json.dumps(body))


def commit_message(repo: Path, payloads: dict, env: dict) -> None:
    """Commits of the pull request's (history and the report read the log of
    out/state.json): each one's subject line and a Pki-Moved trailer carry a payload."""
    for p in payloads.values():
        (repo / "out" / "state.json").write_text((repo / "out" / "state.json").read_text() + "\n")
        git(env, repo, "add", "out/state.json")
        git(env, repo, "commit", "-q", "-m", f"pki: {p}\n\nPki-Moved: web {p} -> web")


@dataclass(frozen=True)
class Source:
    build: Callable[[Path, dict, dict], None]
    renderers: tuple[str, ...]
    refuses: Callable[[str], bool] = lambda p: False
    refusal: tuple[tuple[str, ...], ...] = ()  # the commands that refuse it, saying ``needle``
    needle: str = ""
    multi: bool = False
    base: bool = False


PLAN = ("plan-text", "plan-markdown", "ci-comment")
SOURCES = {
    # a control character never goes into a certificate: refused in a subject value or a URI
    "subject": Source(subject, PLAN + ("graph-mermaid", "graph-dot"), unprintable, (("validate",),),
                      "holds a control or other non-printable character", multi=True, base=True),
    "uri-san": Source(uri_san, PLAN, lambda p: spaced(p) or unprintable(p), (("validate",),), "is not a URI", multi=True, base=True),
    "crl-url": Source(crl_url, PLAN, lambda p: spaced(p) or unprintable(p), (("validate",),), "is not a URI"),
    # one repository per payload: the plan shows the first few names a CSR adds (and a count)
    "csr-san": Source(csr_san, PLAN),
    "entry-name": Source(entry_name, (), lambda p: True, (("graph",),), "is not a valid name", multi=True),
    "state-settings": Source(state_settings, PLAN),
    "state-crl-number": Source(state_crl_number, (), lambda p: True, (("status", "--now", NOW),), "the state is damaged"),
    "state-revocation-reason": Source(state_revocation_reason, ("report",), multi=True, base=True),
    # a journal's steps are checked as the state is once folded: a number that is no
    # number, or a record pkic never wrote (a 4-digit serial, a name that is none), is
    # refused before anything renders it
    "journal-crl-number": Source(journal_crl_number, (), lambda p: True, (("status", "--now", NOW),), "its steps leave a damaged state", multi=True),
    "journal-record": Source(journal_record, (), lambda p: True, (("status", "--now", NOW),), "its steps leave a damaged state", multi=True),
    # out.seal is checked before the plan: plan refuses, and its errors go into the comment
    "seal-format": Source(seal_format, ("ci-comment", "status", "verify")),
    # git folds a newline in a subject line into a space, and a trailer is one line
    "commit": Source(commit_message, ("history", "report"), lambda p: "\n" in p, multi=True),
}


# --------------------------------------------------------------------------- renderers

RENDERERS = {  # name -> (output format, command)
    "plan-text": ("text", ("plan", "--now", NOW)),
    "plan-markdown": ("markdown", ("plan", "--format", "markdown", "--now", NOW)),
    "ci-comment": ("markdown", ("plan", "--format", "markdown", "--now", NOW)),
    "status": ("text", ("status", "--all", "--now", NOW)),
    "check": ("text", ("check", "--now", NOW)),
    "report": ("html", ("report", "--out", "report.html", "--now", NOW)),
    "history": ("text", ("history", "web")),
    "verify": ("text", ("verify", "--seal")),
    "graph-mermaid": ("graph", ("graph",)),
    "graph-dot": ("graph", ("graph", "--format", "dot")),
}
EXIT = {"plan": (0, 1), "check": (0, 1, 2), "verify": (0, 1)}  # else 0


class Lab:
    """The repositories, built once for the module, and each command's output on them."""

    def __init__(self, template: Path, base: Path):
        self.template, self.base = template, base
        self.pkic: Pkic = make_pkic(base)
        for sub in ("age", "seal"):
            shutil.copytree(template / "home" / sub, self.pkic.home / sub)
        self._base: Path | None = None
        self.repos: dict = {}
        self.runs: dict = {}

    def based(self) -> Path:
        """The template with a client certificate e-KEY per payload, applied and committed."""
        if self._base is None:
            repo = self.base / "base"
            shutil.copytree(self.template / "main", repo, symlinks=True, ignore=shutil.ignore_patterns(".pkic"))
            with (repo / "pki.yaml").open("a") as fh:
                for k in PAYLOADS:
                    fh.write(f"  e-{k}:\n    issuer: services-ca\n    profile: client\n    subject: {{CN: e-{k}}}\n    uri: [https://e.example/e-{k}]\n")
            git(self.pkic.env, repo, "commit", "-q", "-am", "pki: a certificate per payload")
            self.pkic.ok("apply", "--yes", "--commit", "--now", NOW, cwd=repo)
            self._base = repo
        return self._base

    def repo(self, source: str, key: str) -> Path:
        src = SOURCES[source]
        group = ("refused" if src.refuses(PAYLOADS[key]) else "accepted") if src.multi else key
        if (source, group) not in self.repos:
            repo = self.base / f"{source}-{group}"
            shutil.copytree(self.based() if src.base else self.template / "main", repo, symlinks=True, ignore=shutil.ignore_patterns(".pkic"))
            if src.multi:
                chosen = {k: p for k, p in PAYLOADS.items() if src.refuses(p) == (group == "refused")}
            else:
                chosen = {key: PAYLOADS[key]}
            src.build(repo, chosen, self.pkic.env)
            self.repos[source, group] = repo
        return self.repos[source, group]

    def run(self, source: str, key: str, args: tuple[str, ...]) -> subprocess.CompletedProcess:
        repo = self.repo(source, key)
        if (repo, args) not in self.runs:
            proc = self.pkic(*args, cwd=repo)
            text = proc.stdout + proc.stderr
            assert "Traceback" not in text and "pkic crashed" not in text, text
            self.runs[repo, args] = proc
        return self.runs[repo, args]

    def render(self, source: str, key: str, renderer: str) -> str:
        fmt, args = RENDERERS[renderer]
        proc = self.run(source, key, args)
        text = proc.stdout + proc.stderr
        assert proc.returncode in EXIT.get(args[0], (0,)), f"pkic {' '.join(args)} exited {proc.returncode}:\n{text}"
        if renderer == "ci-comment":  # what `pkic ci comment` posts: the markdown plan, and its errors when it failed
            from compiler.ci import comment_body

            return comment_body(proc.stdout, RUN, f"https://github.example/acme/pki/actions/runs/{RUN}", HEAD, proc.stderr if proc.returncode else "")
        if renderer == "plan-markdown":
            return proc.stdout
        if renderer == "report":
            return (self.repo(source, key) / "report.html").read_text()
        return text


@pytest.fixture(scope="module")
def lab(template: Path, tmp_path_factory) -> Lab:
    return Lab(template, tmp_path_factory.mktemp("escaping"))


# --------------------------------------------------------------------------- the rules per format


def markdown_problems(text: str) -> list[str]:
    """What in ``text`` would render as something else than the text it holds: raw HTML
    that is not the plan's own, a code span left open, a table row with another number
    of cells than its header, a fenced block left open."""
    problems = []
    fence, cols, details = None, None, 0
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if fence is not None:  # a fenced block shows its lines as they are
            if line.strip().startswith(fence) and set(line.strip()) == {"`"}:
                fence = None
            continue
        m = re.match(r"\s*(`{3,})", line)
        if m:
            fence = m.group(1)
            continue
        if re.fullmatch(r"<!-- pkic-plan( run-id=\d+)? -->", line) and i == 0:
            continue
        if "<!--" in line:
            problems.append(f"line {i + 1}: an HTML comment opens: {line!r}")
        for tag in re.findall(r"<\s*/?\s*([A-Za-z][A-Za-z0-9-]*)", line):
            if tag.lower() not in MD_TAGS:
                problems.append(f"line {i + 1}: raw <{tag}>: {line!r}")
        if line == "<details><summary>Details</summary>":
            details += 1
        elif line == "</details>":
            details -= 1
        elif re.search(r"<\s*/?\s*(details|summary)", line, re.I):
            problems.append(f"line {i + 1}: a details tag that is not the plan's: {line!r}")
        if line.count("`") % 2:
            problems.append(f"line {i + 1}: a code span left open: {line!r}")
        if line.startswith("|"):
            n = len(re.findall(r"(?<!\\)\|", line))
            if cols is None:
                cols = n
            elif n != cols:
                problems.append(f"line {i + 1}: {n - 1} cells, the table has {cols - 1}: {line!r}")
        else:
            cols = None
    if fence is not None:
        problems.append("a fenced block is left open")
    if details:
        problems.append("<details> and </details> do not pair")
    return problems


def fenced(text: str) -> str:
    """The lines of text's fenced blocks (shown as they are)."""
    inside, fence = [], None
    for line in text.split("\n"):
        if fence is None:
            m = re.match(r"\s*(`{3,})", line)
            fence = m.group(1) if m else None
        elif line.strip().startswith(fence) and set(line.strip()) == {"`"}:
            fence = None
        else:
            inside.append(line)
    return "\n".join(inside)


def check_markdown(text: str, key: str) -> None:
    """Escaped for markdown; or shown in a fenced block (a failed plan's errors, in the
    comment), as the terminal showed it."""
    assert markdown_problems(text) == [], text
    assert MD_FORM[key] in text or TEXT_FORM[key] in fenced(text), f"{MD_FORM[key]!r} not in:\n{text}"


def check_html(text: str, key: str) -> None:
    tags = {t.lower() for t in re.findall(r"<\s*/?\s*([A-Za-z!][A-Za-z0-9-]*)", text)}
    assert tags <= REPORT_TAGS, sorted(tags - REPORT_TAGS)
    assert "<!--" not in text
    assert HTML_FORM[key] in text, f"{HTML_FORM[key]!r} not in the report"


def check_text(text: str, key: str) -> None:
    """Rich markup shows as its literal text (so rich did not interpret it); control
    characters show escaped."""
    assert TEXT_FORM[key] in text, f"{TEXT_FORM[key]!r} not in:\n{text}"
    if "\n" in PAYLOADS[key]:
        assert PAYLOADS[key] not in text
    if "\x1b" in PAYLOADS[key]:
        assert "\x1b" not in text


def check_graph(text: str, key: str) -> None:
    """The diagram shows names, kinds and key types only: nothing of the payload."""
    assert text.startswith(("graph TD", "digraph pki")), text
    assert PAYLOADS[key] not in text and "<img" not in text and "[bold]" not in text and "\x1b" not in text


CHECKS = {"markdown": check_markdown, "html": check_html, "text": check_text, "graph": check_graph}


# --------------------------------------------------------------------------- the table

ESCAPED = [pytest.param(s, k, r, id=f"{s}-{k}-{r}") for s, src in SOURCES.items() for k, p in PAYLOADS.items() if not src.refuses(p) for r in src.renderers]
REFUSED = [pytest.param(s, k, id=f"{s}-{k}") for s, src in SOURCES.items() for k, p in PAYLOADS.items() if src.refuses(p)]


@pytest.mark.slow
@pytest.mark.parametrize(("source", "key", "renderer"), ESCAPED)
def test_escaped(lab: Lab, source: str, key: str, renderer: str) -> None:
    fmt, _ = RENDERERS[renderer]
    CHECKS[fmt](lab.render(source, key, renderer), key)


@pytest.mark.slow
@pytest.mark.parametrize(("source", "key"), REFUSED)
def test_refused(lab: Lab, source: str, key: str) -> None:
    src = SOURCES[source]
    if source == "commit":  # git itself: the subject line is the first paragraph, joined
        subject = git(lab.pkic.env, lab.repo(source, key), "log", "-1", "--format=%s").stdout.rstrip("\n")
        assert subject == "pki: " + PAYLOADS[key].replace("\n", " ")
        return
    assert src.refusal
    for args in src.refusal:
        proc = lab.run(source, key, args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stdout == "", proc.stdout  # nothing rendered
        assert src.needle in proc.stderr, proc.stderr
        if source not in ("state-crl-number", "journal-crl-number", "journal-record"):  # the error names the value, escaped
            check_text(proc.stderr, key)


@pytest.mark.parametrize("key", PAYLOADS)
def test_graph_labels_escaped_past_validation(key: str) -> None:
    """Were a hostile name or key type to get past validation, its Mermaid label still
    could not leave its quotes or carry markup, nor its dot string its quotes, and
    neither could add a line."""
    from types import SimpleNamespace

    from compiler import graph

    p = PAYLOADS[key]
    spec = SimpleNamespace(entries={"root": SimpleNamespace(kind="authority", key_type="ecdsa-p384", issuer=None),
                                    p: SimpleNamespace(kind="certificate", key_type=p, issuer="root")})
    mermaid = graph.mermaid(spec, {p}).splitlines()
    assert len(mermaid) == 5, mermaid  # graph TD, two nodes, one edge, one style
    for line in mermaid[1:3]:
        m = re.fullmatch(r'  n_\w+\(?\["([^"]*)"\]\)?', line)
        assert m, line
        label = m.group(1).replace("<br/>", "")
        assert label.isprintable() and not any(c in label for c in '<>"[]`|'), line
    dot = graph.dot(spec, {p}).splitlines()
    assert len(dot) == 7, dot  # header (3), two nodes, one edge, }
    assert all(line.isprintable() for line in mermaid + dot)
    quoted = r'"(?:[^"\\\n]|\\.)*"'
    for line in dot[3:5]:
        assert re.fullmatch(rf"  {quoted} \[shape=\w+, label={quoted}(, style=\"dashed\")?\];", line), line
    assert re.fullmatch(rf"  {quoted} -> {quoted};", dot[5]), dot[5]
