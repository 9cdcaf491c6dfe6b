"""The Typer layer: parse flags, call the core, render the result."""
