"""s5cli: selective structured state-spaces (S5) for long-form video understanding."""

__version__ = "0.1.0"
