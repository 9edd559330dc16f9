"""How quantities read in what a person sees: ``3 warnings``, ``3.2 MB``, ``12m``."""

from __future__ import annotations


def plural(count: int, word: str) -> str:
    """``1 warning``, ``3 warnings``."""
    return f"{count} {word}{'s' if count != 1 else ''}"


def human_bytes(size: int) -> str:
    """``11 KB``, ``3.2 MB``, ``1.5 GB`` (decimal units, as registries and S3 consoles show them)."""
    if size < 1000:
        return f"{size} B"
    for unit, scale in (("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)):
        value = size / scale
        text = f"{value:.0f}" if value >= 99.95 else f"{value:.1f}"
        if float(text) < 1000 or unit == "TB":
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    """``45s``, ``12m``, ``3h``, ``5d``."""
    seconds = max(0.0, seconds)
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= scale:
            return f"{int(seconds // scale)}{unit}"
    return f"{int(seconds)}s"
