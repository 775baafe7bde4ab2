"""Run many pkilint command lines in one process: the entry points of pkilint's CLIs
(``lint_pkix_cert`` is ``pkilint.bin.lint_pkix_cert:main``), each called with its own
arguments. One start of a linter costs about 0.6 s of imports; the interop PKI has over
a hundred documents and pairs to lint.

stdin: a JSON list of argument lists, each ``[tool, "lint", ...]``; stdout: a JSON list
of ``{"exit": code, "stdout": text, "stderr": text}``, in the same order.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys

TOOLS = {"lint_pkix_cert", "lint_crl", "lint_ocsp_response", "lint_pkix_signer_signee_cert_chain"}


def main() -> int:
    out = []
    for argv in json.load(sys.stdin):
        tool, args = argv[0], argv[1:]
        if tool not in TOOLS:
            raise SystemExit(f"not a pkilint tool: {tool}")
        entry = importlib.import_module(f"pkilint.bin.{tool}").main
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = entry(args)
            except SystemExit as e:  # argparse errors
                code = e.code
        out.append({"exit": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
