"""Label-synthesized reports, attribute sentence banks and zero-shot prompts (models.text)."""

import math

import numpy as np
import pytest

from models.data import schema
from models.data.labels import BIRADS5, DENSITY
from models.data.tables import IMAGE_COLUMNS, Box, image_table
from models.text import (
    PROMPT_STYLES,
    ZERO_SHOT_TASKS,
    attribute_sentences,
    class_prompts,
    describe_image,
    synthesize_report,
)

NEGATIVES = (
    "No mass was observed.", "No calcifications are present.", "Normal architecture is visible."
)


def make_row(**overrides):
    row = dict.fromkeys(IMAGE_COLUMNS)
    row.update(
        laterality="L", view="CC", density="C", breast_birads=4, malignancy=1.0,
        finding_categories=["Mass", "Suspicious Calcification"],
        boxes=[
            Box(10, 10, 50, 50, "Mass", 4, "irregular", "spiculated", True),
            Box(60, 60, 90, 90, "Suspicious Calcification", 4),
        ],
    )
    row.update(overrides)
    return row


def test_canonical_text_is_deterministic_and_complete():
    row = make_row()
    sentences = describe_image(row)
    assert sentences == describe_image(row)
    assert sentences[1] == "An irregular mass with spiculated margins in the left breast."
    assert "heterogeneously dense" in sentences[0]
    assert "malignan" in sentences[-2]
    assert sentences[-1].startswith("Impression: BI-RADS 4")
    assert synthesize_report(row) == " ".join(sentences)


def test_seeded_text_is_reproducible_and_varies_between_seeds():
    row = make_row()
    reports = [synthesize_report(row, np.random.default_rng(seed)) for seed in range(6)]
    assert reports[2] == synthesize_report(row, np.random.default_rng(2))
    assert len(set(reports)) > 1
    for report in reports:  # every variant keeps the mass descriptors
        assert "irregular" in report and "spiculated" in report


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_mass_shape_and_margin_are_mentioned(seed):
    rng = None if seed is None else np.random.default_rng(seed)
    row = make_row(density=None, boxes=[Box(0, 0, 5, 5, "Mass", 3, "oval", "circumscribed", False)])
    mass = [s for s in describe_image(row, rng) if "mass" in s]
    assert len(mass) == 1 and "oval" in mass[0] and "circumscribed" in mass[0]


def test_no_finding_rows_get_negatives_and_unannotated_rows_none():
    normal = make_row(finding_categories=[], boxes=[], malignancy=0.0, breast_birads=1)
    assert [s for s in describe_image(normal) if s in NEGATIVES] == list(NEGATIVES)
    for empty in (["No Finding"], np.array([], dtype=object)):
        assert describe_image(make_row(finding_categories=empty, boxes=[]))[1:4] == list(NEGATIVES)
    rsna = make_row(finding_categories=None, boxes=[], density="B", breast_birads=None)
    assert describe_image(rsna) == [
        "There are scattered areas of fibroglandular density.",
        "The findings are suspicious for malignancy.",
    ]
    seeded = describe_image(normal, np.random.default_rng(0))
    assert len(seeded) == len(describe_image(normal))


def test_listed_finding_without_box_is_described_and_duplicates_once():
    row = make_row(
        finding_categories=["Mass", "Architectural Distortion"],
        boxes=[Box(0, 0, 5, 5, "Mass"), Box(9, 9, 15, 15, "Mass")],
    )
    body = describe_image(row)[1:-2]
    assert body == ["A mass in the left breast.", "Architectural distortion in the left breast."]


def test_missing_labels_are_left_out_on_table_rows():
    record = make_row(density=None, breast_birads=None, malignancy=math.nan, report=None)
    (_, row), = image_table([record]).iterrows()  # pandas row: pd.NA BI-RADS, NaN malignancy
    sentences = describe_image(row)
    assert len(sentences) == 2
    assert not any("BI-RADS" in s or "malignan" in s for s in sentences)


def test_unknown_category_raises():
    with pytest.raises(ValueError, match="Mass"):
        describe_image(make_row(finding_categories=["Lump"], boxes=[]))


@pytest.mark.parametrize("name", [*schema.FINDING_CATEGORIES, "mass", "calcification", "MASS"])
def test_attribute_banks_are_large_unique_and_deterministic(name):
    bank = attribute_sentences(name)
    assert len(bank) >= 20
    assert len(set(bank)) == len(bank)
    assert bank == attribute_sentences(name)
    assert any("left" in s for s in bank) and any("right" in s for s in bank)


def test_attribute_aliases_and_mass_descriptors():
    assert attribute_sentences("calcification") == attribute_sentences("suspicious calcification")
    mass = " ".join(attribute_sentences("Mass"))
    for word in (*schema.MASS_SHAPES, *schema.MASS_MARGINS, "upper outer quadrant", "small"):
        assert word in mass


def test_unknown_attribute_lists_valid_names():
    with pytest.raises(ValueError, match="attribute: unknown 'tumour'; valid: ") as info:
        attribute_sentences("tumour")
    assert {"mass", "suspicious calcification"} <= set(str(info.value).split("valid: ")[1].split(", "))


def test_table6_sentence_prompts():
    assert class_prompts("malignancy") == {
        "benign": ["Findings suggesting benign."], "malignant": ["Findings suggesting malignant."]
    }
    assert class_prompts("mass") == {
        "no mass": ["No mass was observed."], "mass": ["Findings revealed a mass."]
    }
    assert class_prompts("calcification") == {
        "no calcification": ["No calcifications are present."],
        "calcification": ["Finding suggesting calcifications."],
    }
    assert class_prompts("architectural_distortion") == {
        "no architectural distortion": ["Normal architecture is visible."],
        "architectural distortion": ["Displayed architectural distortion."],
    }
    assert class_prompts("mass_shape")["oval"] == ["Mass shape is oval."]
    assert class_prompts("mass_margin")["spiculated"] == ["Mass margins is spiculated."]


def test_label_prompts_and_class_order():
    assert class_prompts("mass", "label") == {"no mass": ["No mass"], "mass": ["mass"]}
    malignancy = class_prompts("malignancy", "label")
    assert malignancy == {"benign": ["benign"], "malignant": ["malignant"]}
    assert list(class_prompts("mass_shape", "label")) == list(schema.MASS_SHAPES)
    assert list(class_prompts("density")) == list(DENSITY.class_names)
    assert list(class_prompts("birads", "label")) == list(BIRADS5.class_names)
    for task in ZERO_SHOT_TASKS:
        for style in PROMPT_STYLES:
            prompts = class_prompts(task, style)
            assert len(prompts) >= 2 and all(p and all(p) for p in prompts.values())
            texts = [t for p in prompts.values() for t in p]
            assert len(set(texts)) == len(texts)


def test_unknown_task_or_style_lists_valid_ones():
    with pytest.raises(ValueError, match="malignancy"):
        class_prompts("cancer")
    with pytest.raises(ValueError, match="sentence"):
        class_prompts("mass", "prose")
