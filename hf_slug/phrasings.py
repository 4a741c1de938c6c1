"""The phrasings a forget criterion checks, per concept kind (each must fail to name the target).

They are disjoint from the audit's held-out templates (`hf_slug.audit.phrasings`), so an audit
never scores on a phrasing the search tuned on.

Misspellings of a name (`misspellings`) are drawn from their own seed, apart from the ones an
audit tries (`hf_slug.audit.phrasings.name_variants`).

Example:
    >>> criterion_templates("identity")[0]
    'a photo of {}.'
    >>> len(misspellings("Grace Hopper", 2))
    2
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ConfigError

MISSPELLING_SEED = 7_919  # the criterion's and the gradient's misspellings; audits use others
MAX_MISSPELLINGS = 8

CRITERION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "identity": (
        "a photo of {}.",
        "an image of {}.",
        "this is {}.",
        "{} in the picture.",
        "a close view of {}.",
        "a good photo of {}.",
        "portrait: {}.",
        "{}, photographed.",
    ),
    "object": (
        "an image of a {}.",
        "this is a {}.",
        "a {} in the picture.",
        "a close view of a {}.",
        "a drawing of a {}.",
        "a good photo of a {}.",
    ),
    "style": (
        "{} style.",
        "an artwork in {} style.",
        "this is {} art.",
        "painted in {} style.",
        "a {} picture.",
        "an image in the {} style.",
    ),
    "concept": ("a photo of {}.", "an image of {}.", "this is {}.", "{} in the picture."),
}


def criterion_templates(kind: str = "concept", extra: tuple[str, ...] = ()) -> list[str]:
    """The built-in phrasings of `kind` plus the user's `extra` templates (each with one `{}`)."""
    if kind not in CRITERION_TEMPLATES:
        raise ConfigError(
            f"unknown concept kind {kind!r}: use one of {sorted(CRITERION_TEMPLATES)}."
        )
    bad = [t for t in extra if not isinstance(t, str) or t.count("{}") != 1]
    if bad:
        raise ConfigError(
            f"template {bad[0]!r} must hold exactly one '{{}}' where the name goes, e.g. "
            "'a photo of {}.'."
        )
    return list(dict.fromkeys([*CRITERION_TEMPLATES[kind], *extra]))


def misspellings(name: str, count: int, avoid: Sequence[str] = ()) -> list[str]:
    """`count` distinct misspellings of `name`, alternately one and two letter edits, drawn
    deterministically (`MISSPELLING_SEED`); never one of `avoid` (other labels: "Ann" is no
    misspelling of "Anna" when Ann is a label too), in any case; fewer when a short name has no
    more, none for a name with fewer than two letters."""
    if sum(c.isalpha() for c in name) < 2:
        return []
    taken = {a.casefold() for a in (name, *avoid)}
    rng = np.random.default_rng([MISSPELLING_SEED, len(name)])
    found: list[str] = []
    for _ in range(8 * count):
        if len(found) == count:
            break
        spelling = misspell(name, 1 + len(found) % 2, rng)
        if spelling.strip() and spelling.casefold() not in taken and spelling not in found:
            found.append(spelling)
    return found


def misspell(text: str, edits: int, rng: np.random.Generator) -> str:
    """`text` with `edits` letter edits: swap neighbours, drop, double or replace one (never
    the first letter, which typos rarely touch)."""
    chars = list(text)
    for _ in range(edits):
        letters = [i for i, c in enumerate(chars) if c.isalpha()]
        if len(letters) < 2:
            break
        i = int(rng.choice(letters[1:]))
        kind = int(rng.integers(4))
        if kind == 0 and i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif kind == 1:
            del chars[i]
        elif kind == 2:
            chars.insert(i, chars[i])
        else:
            chars[i] = "aeiou"[int(rng.integers(5))] if chars[i] not in "aeiou" else "r"
    typo = "".join(chars)
    return typo if typo != text else text[:-1]
