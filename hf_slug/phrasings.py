"""The phrasings a forget criterion checks, per concept kind (each must fail to name the target).

They are disjoint from the audit's held-out templates (`hf_slug.audit.phrasings`), so an audit
never scores on a phrasing the search tuned on.

Example:
    >>> criterion_templates("identity")[0]
    'a photo of {}.'
"""

from __future__ import annotations

from .errors import ConfigError

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
