"""Command line interface (filled in by the upscale-core work)."""

import click


@click.group()
def main() -> None:
    """vhsup: upscale VHS captures and DVD rips."""
