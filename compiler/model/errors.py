"""Diagnostics: user mistakes are collected, located and reported together.

A :class:`Diagnostic` names the file, line and column, the field path inside the
document and says what is wrong, with an optional hint. Commands raise
:class:`PkicError` carrying every diagnostic found in one run; the CLI turns it into
one clear report and exit code 1. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int | None  # 1-based
    column: int | None  # 1-based
    path: str  # dotted field path, e.g. "certificates.web.lifetime"
    message: str
    hint: str | None = field(default=None, compare=False)

    def render(self) -> str:
        """One line (and a hint line); control characters and undecodable bytes from a
        file name or a value are shown escaped, never sent to the terminal."""
        where = _clip(printable(self.file), 120)
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: "
        if self.path:  # names in a path are the file's own keys: a 20,000-character key stays short here
            text += f"{_clip(printable(self.path), 120)}: "
        text += _clip(printable(self.message), 320)
        if self.hint:
            text += f"\n  hint: {_clip(printable(self.hint), 300)}"
        return text


def _clip(text: str, limit: int) -> str:
    """The last line of defence for values echoed into a message (bounded.quote is the
    first): the middle of an over-long text is cut."""
    if len(text) <= limit:
        return text
    keep = (limit - 5) // 2
    return text[:keep] + " ... " + text[-keep:]


def printable(text: str) -> str:
    """``text`` on one line, as it can safely reach a terminal or a log: every control or
    other non-printable character (a newline that would forge a line, an ANSI escape
    sequence, a bidi override) is shown as its Python escape (``\\n``, ``\\x1b``, ``\\u202e``)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class PkicError(Exception):
    """A user-facing failure: one or more diagnostics, exit code 1."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic | str, hint: str | None = None):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic("pkic", None, None, "", diagnostics, hint)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.render() for d in self.diagnostics))


def fail(file: str, message: str, hint: str | None = None, path: str = "") -> PkicError:
    """A single-diagnostic error about a whole file (no line)."""
    return PkicError([Diagnostic(file, None, None, path, message, hint)])
