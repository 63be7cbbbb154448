"""Report and prompt text synthesized from labels, for CLIP training, zero-shot and FActOR.

VinDr-Mammo and RSNA ship labels but no reports, so the text side of CLIP training is written from
the per-image table row (MMG-CLIP's "image-prompts", Mammo-CLIP's label-synthesized reports). With a
random generator the phrasing varies (several templates per sentence kind, finding sentences
shuffled), which is the text augmentation; without one the first, canonical template is used so the
text is deterministic. Zero-shot class prompts follow MMG-CLIP's Table 6 ("sentence" style) or
CXR-CLIP's bare labels ("label" style); :func:`attribute_sentences` is the sentence bank whose mean
embedding is a finding's text direction in FActOR.

Works on rows of :data:`models.data.tables.IMAGE_COLUMNS` (dicts or pandas rows) and never reads the
``report`` column, so real VinDr/RSNA rows without reports get text too. Reports, the sentence bank and
the prompts share one set of sentence tables, which is why they stay in one module (a little over 400
lines).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import product
from typing import Any, NamedTuple

import numpy as np

from models.data import schema
from models.data.labels import (
    BIRADS5,
    DENSITY,
    is_missing,
    parse_binary,
    parse_birads,
    parse_density,
)
from models.errors import check_choice

SIDE_WORDS = {"L": "left", "R": "right"}
LOCATION_WORDS = (
    "upper outer quadrant", "upper inner quadrant", "lower outer quadrant", "lower inner quadrant",
    "retroareolar region",
)
SIZE_WORDS = ("", "small", "large")

# Zero-shot binary finding task -> the FINDING_CATEGORIES name it detects.
FINDING_TASKS = {
    "mass": "Mass",
    "calcification": "Suspicious Calcification",
    "architectural_distortion": "Architectural Distortion",
}
ZERO_SHOT_TASKS = (
    "malignancy", "mass_shape", "mass_margin", *FINDING_TASKS, "density", "birads",
)
PROMPT_STYLES = ("sentence", "label")
MALIGNANCY_CLASSES = ("benign", "malignant")  # MALIGNANCY's class indices 0 and 1

# Negative sentences for an image without findings; the first is MMG-CLIP's Table 6 prompt.
_NEGATIVES = {
    "mass": ("No mass was observed.", "There is no mass.", "No masses are seen."),
    "calcification": (
        "No calcifications are present.", "No suspicious calcifications are seen.",
        "There are no calcifications.",
    ),
    "architectural_distortion": (
        "Normal architecture is visible.", "No architectural distortion is seen.",
        "The breast architecture is preserved.",
    ),
}
_POSITIVE_PROMPTS = {
    "mass": "Findings revealed a mass.",
    "calcification": "Finding suggesting calcifications.",
    "architectural_distortion": "Displayed architectural distortion.",
}
_DENSITY_SENTENCES = {
    "A": (
        "The breast is almost entirely fatty.", "Breast tissue is almost entirely fatty (ACR A).",
        "Predominantly fatty breast composition.",
    ),
    "B": (
        "There are scattered areas of fibroglandular density.",
        "The breast shows scattered fibroglandular tissue (ACR B).",
        "Scattered fibroglandular densities are seen.",
    ),
    "C": (
        "The breast is heterogeneously dense, which may obscure small masses.",
        "Heterogeneously dense breast tissue (ACR C).",
        "The breast parenchyma is heterogeneously dense.",
    ),
    "D": (
        "The breast is extremely dense, which lowers the sensitivity of mammography.",
        "Extremely dense breast tissue (ACR D).", "The breast parenchyma is extremely dense.",
    ),
}
_MALIGNANCY_SENTENCES = {
    0: (
        "There is no evidence of malignancy.", "No signs of malignancy are seen.",
        "The appearance is benign.",
    ),
    1: (
        "The findings are suspicious for malignancy.",
        "The appearance is suggestive of malignancy.",
        "Features are concerning for malignancy.",
    ),
}
_BIRADS_MEANINGS = {
    0: "incomplete, additional imaging evaluation needed", 1: "negative", 2: "benign",
    3: "probably benign", 4: "suspicious", 5: "highly suggestive of malignancy",
    6: "known biopsy-proven malignancy",
}
_IMPRESSIONS = (
    "Impression: BI-RADS {k}, {meaning}.", "Assessment: BI-RADS category {k} ({meaning}).",
    "BI-RADS {k}: {meaning}.", "The overall assessment is BI-RADS {k}, {meaning}.",
)
# Finding sentence frames: {np} a noun phrase with its article, {be} is/are, {where} a site.
_FINDING_TEMPLATES = (
    "{np} {where}.", "There {be} {np} {where}.", "{np} {be} seen {where}.",
    "{np} {be} noted {where}.", "The mammogram shows {np} {where}.",
)
_BREAST_SITES = (
    "in the {side} breast", *(f"in the {w} of the {{side}} breast" for w in LOCATION_WORDS)
)


class _Phrase(NamedTuple):
    """A finding noun phrase without article; countable ones take "a"/"an" and size words."""

    words: str
    countable: bool = True
    plural: bool = False

    def noun_phrase(self, size: str = "") -> str:
        if not self.countable:
            return self.words
        words = f"{size} {self.words}".strip()
        return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


class _Category(NamedTuple):
    """How a finding category is phrased: noun phrases and sites, the first of each canonical.

    ``sized``: whether size words fit (not for findings that are large or fixed by nature).
    """

    phrases: tuple[_Phrase, ...]
    sites: tuple[str, ...] = _BREAST_SITES
    sized: bool = True


_CATEGORIES = {
    "Mass": _Category((_Phrase("mass"), _Phrase("mass lesion"))),
    "Suspicious Calcification": _Category((
        _Phrase("suspicious calcifications", countable=False, plural=True),
        _Phrase("cluster of suspicious calcifications"),
        _Phrase("suspicious microcalcifications", countable=False, plural=True),
        _Phrase("group of suspicious microcalcifications"),
    )),
    "Focal Asymmetry": _Category((
        _Phrase("focal asymmetry"),
        _Phrase("focal asymmetric density"),
        _Phrase("focal area of asymmetry"),
    )),
    "Architectural Distortion": _Category((
        _Phrase("architectural distortion", countable=False),
        _Phrase("area of architectural distortion"),
        _Phrase("distortion of the breast architecture", countable=False),
    )),
    "Asymmetry": _Category((
        _Phrase("asymmetry"), _Phrase("asymmetric density"), _Phrase("area of asymmetry"),
    )),
    "Skin Thickening": _Category((
        _Phrase("skin thickening", countable=False),
        _Phrase("thickening of the skin", countable=False),
        _Phrase("thickened skin", countable=False),
    )),
    "Suspicious Lymph Node": _Category(
        (
            _Phrase("suspicious lymph node"),
            _Phrase("abnormal lymph node"),
            _Phrase("dense lymph node"),
        ),
        (
            "in the {side} axilla",
            "in the {side} axillary region",
            "in the axillary tail of the {side} breast",
            "near the {side} axilla",
        ),
    ),
    "Nipple Retraction": _Category(
        (
            _Phrase("nipple retraction", countable=False),
            _Phrase("retraction of the nipple", countable=False),
            _Phrase("retracted nipple"),
        ),
        (
            "in the {side} breast",
            "on the {side} side",
            "in the retroareolar region of the {side} breast",
            "at the nipple of the {side} breast",
        ),
        sized=False,
    ),
    "Global Asymmetry": _Category(
        (
            _Phrase("global asymmetry"),
            _Phrase("global asymmetric density"),
            _Phrase("asymmetry involving most of the breast"),
        ),
        (
            "in the {side} breast",
            "of the {side} breast",
            "throughout the {side} breast",
            "on the {side} side",
        ),
        sized=False,
    ),
    "Skin Retraction": _Category((
        _Phrase("skin retraction", countable=False),
        _Phrase("retraction of the skin", countable=False),
        _Phrase("retracted skin", countable=False),
    )),
}
_ATTRIBUTE_NAMES = {
    **{c.lower(): c for c in schema.FINDING_CATEGORIES},
    **{task.replace("_", " "): category for task, category in FINDING_TASKS.items()},
}


def _mass_phrases(shape: str | None, margin: str | None) -> tuple[_Phrase, ...]:
    """Mass noun phrases naming the shape and margin when known."""
    nouns = [f"{shape or ''} {p.words}".strip() for p in _CATEGORIES["Mass"].phrases]
    if margin is None:
        return tuple(_Phrase(noun) for noun in nouns)
    return tuple(
        _Phrase(f"{noun} with {margin} {edge}") for noun in nouns for edge in ("margins", "borders")
    )


def _finding_sentence(
    category: str,
    side: str,
    rng: np.random.Generator | None,
    shape: str | None = None,
    margin: str | None = None,
) -> str:
    if category not in _CATEGORIES:
        raise ValueError(
            f"unknown finding category {category!r}; valid: {list(schema.FINDING_CATEGORIES)}"
        )
    phrases = _mass_phrases(shape, margin) if category == "Mass" else _CATEGORIES[category].phrases
    phrase = _pick(phrases, rng)
    where = _CATEGORIES[category].sites[0].format(side=side)
    return _fill(_pick(_FINDING_TEMPLATES, rng), phrase, where)


def _fill(template: str, phrase: _Phrase, where: str, size: str = "") -> str:
    be = "are" if phrase.plural else "is"
    text = template.format(np=phrase.noun_phrase(size), where=where, be=be)
    text = " ".join(text.split())  # an unknown side leaves a double space
    return text[0].upper() + text[1:]


def _pick(options: Sequence[Any], rng: np.random.Generator | None) -> Any:
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def _optional(value: Any) -> Any:
    """A scalar cell's value, or None where it is missing (None/NaN/pd.NA/empty string)."""
    return None if is_missing(value) else value


def _listed(value: Any) -> list[Any] | None:
    """A list cell's items (list, tuple or array), or None where the cell is missing."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    if is_missing(value):
        return None
    raise ValueError(f"expected a list of findings or boxes, got {value!r}")


def _findings(row: Mapping[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """Unique (category, shape, margin) per box, then listed categories that have no box."""
    found: dict[tuple[str, str | None, str | None], None] = {}
    for box in _listed(row.get("boxes")) or ():
        if box.category == "Mass":
            found[(box.category, _optional(box.mass_shape), _optional(box.mass_margin))] = None
        else:
            found[(box.category, None, None)] = None
    boxed = {category for category, _, _ in found}
    for category in _listed(row.get("finding_categories")) or ():
        if category != schema.NO_FINDING and category not in boxed:
            found[(category, None, None)] = None
    return list(found)


def describe_image(row: Mapping[str, Any], rng: np.random.Generator | None = None) -> list[str]:
    """Sentences about one image: density, findings (or negatives), malignancy, BI-RADS impression.

    Every known label gets a sentence; unknown ones (None/NaN) are left out. Negative sentences are
    written only when ``finding_categories`` is an empty list (or ``["No Finding"]``), never when
    findings are not annotated (None). Identical findings (same category, shape and margin) are
    described once. ``rng`` picks a random template per sentence and shuffles the finding sentences.

    Raises:
        ValueError: a finding category outside :data:`models.data.schema.FINDING_CATEGORIES`, or
            ``boxes``/``finding_categories`` neither a list nor missing.
    """
    sentences = []
    density = parse_density(row.get("density"))
    if density is not None:
        sentences.append(_pick(_DENSITY_SENTENCES[density], rng))
    side = SIDE_WORDS.get(_optional(row.get("laterality")), "")
    body = [
        _finding_sentence(category, side, rng, shape, margin)
        for category, shape, margin in _findings(row)
    ]
    if _listed(row.get("finding_categories")) is not None and not body:
        body = [_pick(negatives, rng) for negatives in _NEGATIVES.values()]
    if rng is not None:
        body = [body[i] for i in rng.permutation(len(body))]
    sentences.extend(body)
    malignant = parse_binary(row.get("malignancy"))
    if malignant is not None:
        sentences.append(_pick(_MALIGNANCY_SENTENCES[malignant], rng))
    birads = parse_birads(row.get("breast_birads"))
    if birads is not None:
        impression = _pick(_IMPRESSIONS, rng)
        sentences.append(impression.format(k=birads, meaning=_BIRADS_MEANINGS[birads]))
    return sentences


def synthesize_report(row: Mapping[str, Any], rng: np.random.Generator | None = None) -> str:
    """:func:`describe_image`'s sentences as one report string."""
    return " ".join(describe_image(row, rng))


def finding_index(attribute: str) -> tuple[str, int]:
    """An attribute's finding category and its index in :data:`models.data.schema.FINDING_CATEGORIES`
    (the box labels' index)."""
    category = attribute_category(attribute)
    return category, schema.FINDING_CATEGORIES.index(category)


def task_name(name: str) -> str:
    """A zero-shot task name from any spelling a finding has elsewhere (``--attribute``'s
    "suspicious calcification", the category "Suspicious Calcification") -> "calcification";
    other names are returned as given."""
    category = _ATTRIBUTE_NAMES.get(name.strip().lower().replace("_", " "))
    tasks = {c: task for task, c in FINDING_TASKS.items()}
    return tasks.get(category, name)


def attribute_category(attribute: str) -> str:
    """The :data:`models.data.schema.FINDING_CATEGORIES` name of an attribute ("mass",
    "Suspicious Calcification", "architectural_distortion", ...; case-insensitive).

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    name = attribute.strip().lower().replace("_", " ")
    check_choice("attribute", name, sorted(_ATTRIBUTE_NAMES))
    return _ATTRIBUTE_NAMES[name]


def attribute_sentences(attribute: str) -> list[str]:
    """A deterministic, deduplicated bank of sentences describing one finding category.

    Varies the noun phrase (for masses every shape x margin combination, known or not), the side,
    the site (quadrant or, for lymph nodes, axilla), the sentence frame and a size word; FActOR
    averages the bank's text embeddings into the attribute's direction.

    Args:
        attribute: a name from :data:`models.data.schema.FINDING_CATEGORIES` or a zero-shot task
            name ("mass", "calcification", "architectural_distortion"), case-insensitive.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    category = attribute_category(attribute)
    if category == "Mass":
        phrases = tuple(
            _mass_phrases(shape, margin)[0]
            for shape in (None, *schema.MASS_SHAPES)
            for margin in (None, *schema.MASS_MARGINS)
        )
    else:
        phrases = _CATEGORIES[category].phrases
    spec = _CATEGORIES[category]
    sizes = SIZE_WORDS if spec.sized else ("",)
    combos = product(phrases, SIDE_WORDS.values(), spec.sites)
    bank = (
        _fill(
            _FINDING_TEMPLATES[i % len(_FINDING_TEMPLATES)],
            phrase,
            site.format(side=side),
            sizes[i % len(sizes)],
        )
        for i, (phrase, side, site) in enumerate(combos)
    )
    return list(dict.fromkeys(bank))


def class_prompts(task: str, style: str = "sentence") -> dict[str, list[str]]:
    """Zero-shot prompts: class name -> prompts (average their embeddings per class).

    Classes are in the order of the task's label encoder indices (negative first for the binary
    finding tasks, whose classes are ``"no <finding>"`` and ``"<finding>"``). "sentence" style uses
    MMG-CLIP's Table 6 templates for malignancy, mass shape/margin and the finding tasks, and the
    canonical report sentences of :func:`describe_image` for density and BI-RADS; "label" style is
    CXR-CLIP's: ``"<finding>"`` / ``"No <finding>"`` for binary tasks, the bare class label else.

    Raises:
        ValueError: an unknown task or style (the message lists the valid ones).
    """
    check_choice("zero-shot task", task, ZERO_SHOT_TASKS)
    check_choice("prompt style", style, PROMPT_STYLES)
    sentence = style == "sentence"
    if task in FINDING_TASKS:
        label = task.replace("_", " ")
        negative = _NEGATIVES[task][0] if sentence else f"No {label}"
        positive = _POSITIVE_PROMPTS[task] if sentence else label
        return {f"no {label}": [negative], label: [positive]}
    if task == "density":
        return {
            letter: [_DENSITY_SENTENCES[letter][0] if sentence else schema.DENSITIES[index]]
            for letter, index in DENSITY.mapping.items()
        }
    if task == "birads":
        return {
            BIRADS5.class_names[index]: [
                _IMPRESSIONS[0].format(k=k, meaning=_BIRADS_MEANINGS[k])
                if sentence else BIRADS5.class_names[index]
            ]
            for k, index in BIRADS5.mapping.items()
        }
    classes, template = {
        "malignancy": (MALIGNANCY_CLASSES, "Findings suggesting {}."),
        "mass_shape": (schema.MASS_SHAPES, "Mass shape is {}."),
        "mass_margin": (schema.MASS_MARGINS, "Mass margins is {}."),  # sic, the paper's wording
    }[task]
    return {name: [template.format(name) if sentence else name] for name in classes}
