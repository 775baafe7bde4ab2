"""The command line: typer wiring and renderings (``pkic``)."""

from compiler.cli.main import app, main

__all__ = ["app", "main"]
