"""The embedded world's concepts: kinds and splits, identity features and palettes, invented
names, objects, styles, digits and caption templates (`hf_slug.demo.world` draws them).

Example:
    >>> fill_template("a photo of {name}.", "Grace Hopper")
    'a photo of Grace Hopper.'
"""

from __future__ import annotations

IMAGE_SIZE = 48
SPLITS = ("train", "val", "test")
KINDS = ("identity", "object_style", "digit")
PROMPT_KINDS = ("identity", "object", "style", "digit")
ATTRIBUTES = ("identity", "object", "style", "digit")
EVAL_SPLITS = ("val", "test")

# ---------------------------------------------------------------------------------------------
# Concepts
# ---------------------------------------------------------------------------------------------

FEATURES: dict[str, tuple[str, ...]] = {
    "face": ("oval", "round", "long", "square"),
    "skin": ("porcelain", "fair", "tan", "olive", "brown", "deep"),
    "hair_style": ("short", "long", "bun", "bald", "curly", "spiky", "bob", "ponytail"),
    "hair_colour": ("black", "brown", "blonde", "red", "grey", "teal"),
    "glasses": ("none", "round", "square", "sunglasses"),
    "beard": ("none", "full", "moustache", "goatee"),
    "hat": ("none", "cap", "beanie", "headband"),
    "earrings": ("none", "gold"),
    "clothing_colour": ("red", "blue", "green", "yellow", "purple", "orange", "white", "black"),
    "clothing_style": ("crew", "vneck", "shirt_tie", "hoodie", "striped"),
}
_FEATURE_WEIGHTS: dict[str, tuple[float, ...]] = {
    "hair_style": (3, 3, 2, 1, 2, 2, 2, 2),
    "glasses": (4, 2, 2, 2),
    "beard": (6, 2, 2, 2),
    "hat": (5, 2, 2, 2),
}
MIN_FEATURE_DIFFERENCES = 5
N_DRAWN_IDENTITIES = 24
_DESIGN_SEED = 20240611

RGB = tuple[int, int, int]  # a palette colour

SKIN = {
    "porcelain": (250, 224, 205),
    "fair": (238, 193, 160),
    "tan": (214, 160, 112),
    "olive": (181, 140, 90),
    "brown": (140, 88, 56),
    "deep": (88, 56, 38),
}
HAIR = {
    "black": (28, 24, 24),
    "brown": (104, 62, 30),
    "blonde": (232, 198, 118),
    "red": (182, 62, 26),
    "grey": (172, 172, 176),
    "teal": (24, 150, 156),
}
CLOTHES = {
    "red": (204, 40, 40),
    "blue": (40, 78, 204),
    "green": (40, 150, 62),
    "yellow": (238, 204, 40),
    "purple": (132, 60, 172),
    "orange": (242, 132, 30),
    "white": (238, 238, 238),
    "black": (34, 34, 40),
}
EYES = {"brown": (92, 56, 30), "blue": (60, 122, 206), "green": (56, 150, 80)}
ACCENTS = (
    (214, 36, 110),
    (30, 120, 200),
    (250, 180, 20),
    (90, 180, 60),
    (240, 90, 40),
    (70, 70, 80),
)

_FIRST_BEARDED = (
    "Marcus", "Tobias", "Felix", "Hugo", "Ronan", "Dmitri", "Caleb", "Anton", "Silas", "Jasper",
    "Lionel", "Osric", "Bram", "Cyrus",
)  # fmt: skip
_FIRST_OTHER = (
    "Clara", "Imogen", "Lucia", "Maren", "Talia", "Nadia", "Beatrix", "Odette", "Priya", "Helena",
    "Yara", "Sabine", "Ingrid", "Elliot", "Noor", "Rosalind", "Kenji", "Amara", "Theo", "Delphine",
)  # fmt: skip
_LAST = (
    "Alderwick", "Brennholt", "Castellane", "Dunmore", "Everhart", "Fairbrook", "Galloway",
    "Harrowgate", "Iverson", "Jelstrup", "Kestrelle", "Lindqvist", "Morrowby", "Norcastle",
    "Ostrander", "Pemberton", "Quennell", "Rushworth", "Sandoval", "Tillbury", "Underhill",
    "Varga", "Whitcombe", "Yarrowby",
)  # fmt: skip

REAL_PORTRAITS = ("Grace Hopper", "Eileen Collins")
OBJECTS = (
    "house", "tree", "car", "fish", "cup", "star", "boat", "flower", "key", "umbrella", "heart",
    "moon",
)  # fmt: skip
STYLES = ("watercolor", "pixel art", "sketch", "neon", "mosaic", "striped", "pastel", "charcoal")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# ---------------------------------------------------------------------------------------------
# Caption templates: (template, attributes it states). Eval templates never appear in training.
# ---------------------------------------------------------------------------------------------

Template = tuple[str, tuple[str, ...]]
_ID = ("identity",)
_OB = ("object",)
_ST = ("style",)
_OS = ("object", "style")
_DG = ("digit",)

TRAIN_TEMPLATES: dict[str, tuple[Template, ...]] = {
    "identity": (
        ("a photo of {name}.", _ID),
        ("a portrait of {name}", _ID),
        ("{name} posing for a picture", _ID),
        ("a close-up photo of {name}", _ID),
        ("{name}, face and shoulders", _ID),
        ("this is {name}", _ID),
        ("a picture showing {name}.", _ID),
        ("{name} looking at the camera", _ID),
        ("an image of {name}!", _ID),
    ),
    "object_style": (
        ("{a_object} in {style} style", _OS),
        ("a {style} painting of {a_object}", _OS),
        ("{a_object}, drawn in {style} style", _OS),
        ("{style} artwork of {a_object}", _OS),
        ("a picture of {a_object} in the {style} style", _OS),
        ("{a_object}", _OB),
        ("a picture of {a_object}", _OB),
        ("a drawing of {a_object}", _OB),
        ("{style} style artwork", _ST),
        ("an image in {style} style", _ST),
        ("art in the {style} style", _ST),
    ),
    "digit": (
        ("a handwritten digit {numeral}", _DG),
        ("the number {word}", _DG),
        ("a photo of the digit {word}", _DG),
        ("a handwritten {word}", _DG),
        ("the digit {numeral}", _DG),
        ("{numeral}, written by hand", _DG),
    ),
}
EVAL_TEMPLATES: dict[str, tuple[Template, ...]] = {
    "identity": (("{name}.", _ID),),
    "object": (
        ("an illustration of {a_object}.", _OB),
        ("there is {a_object} in this image.", _OB),
    ),
    "style": (("a {style} style image.", _ST), ("made in {style} style.", _ST)),
    "object_style": (
        ("an illustration of {a_object}, {style} style.", _OS),
        ("{a_object} made in {style} style.", _OS),
    ),
    "digit": (("an image of the digit {word}.", _DG), ("a drawing of the number {numeral}.", _DG)),
}


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def fill_template(template: str, label: str, style: str | None = None) -> str:
    """`template` with its fields filled for a concept (identity name, object, style or digit)."""
    fields = {"name": label, "object": label, "a_object": _article(label), "style": style or label}
    if label in DIGITS:
        fields.update(word=label, numeral=str(DIGITS.index(label)))
    return template.format(**fields)
