"""Command line: Typer apps that call the domain packages and print with Rich."""
