"""CLI commands of the serve stage (registered on the shared app)."""

from doohable.cli.common import app  # noqa: F401
