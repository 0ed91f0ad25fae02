"""How vhsup words numbers for people: counts with the right plural, aspect ratios by their usual names."""

from __future__ import annotations

from fractions import Fraction

#: Display shapes people know by name; a picture within 0.5% of one is shown as it (854x480 is "16:9").
NAMED_ASPECTS = (
    Fraction(4, 3),
    Fraction(16, 9),
    Fraction(3, 2),
    Fraction(5, 4),
    Fraction(1, 1),
    Fraction(185, 100),
    Fraction(239, 100),
    Fraction(64, 27),
)
_LABELS = {Fraction(185, 100): "1.85:1", Fraction(239, 100): "2.39:1", Fraction(64, 27): "21:9"}


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``1 frame``, ``2 frames``, ``0 frames``; ``many`` for irregular plurals."""
    return f"{n} {noun if n == 1 else (many or noun + 's')}"


def aspect_label(dar: Fraction) -> str:
    """A display aspect ratio as people write it: 16:9 for 854x480, else the exact ratio."""
    dar = Fraction(dar)
    for named in NAMED_ASPECTS:
        if abs(dar / named - 1) <= 0.005:
            return _LABELS.get(named, f"{named.numerator}:{named.denominator}")
    exact = dar.limit_denominator(100)
    return f"{exact.numerator}:{exact.denominator}" if exact == dar else f"{float(dar):.3f}:1"
