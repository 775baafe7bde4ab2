"""The command line: typer wiring and renderings (``pkic``)."""

from compiler.cli.app import app
from compiler.cli.main import main

__all__ = ["app", "main"]
