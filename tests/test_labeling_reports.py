"""Report text handling: sections, sentence splitting, normalisation, the 97-character cap."""

import pytest

from monai_vecl.reports import (MAX_SENTENCE_CHARS, cap_sentence, extract_sections, normalize_sentence,
                                report_sentences, split_sentences)

MIMIC_STYLE = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough  // ?pna

 FINDINGS:

 There is a 1.5 cm nodule in the right upper lobe, e.g. near the
 hilum.  No effusion or pneumothorax. Dr. ___ was notified at 3 p.m. on ___.

 IMPRESSION:

 1. No acute intrathoracic process.
 2. Nodule, approx. 1.5 cm.
 3) Stable cardiomegaly
"""


def test_sections_mimic_style():
    sections = extract_sections(MIMIC_STYLE)
    assert set(sections) == {"examination", "indication", "findings", "impression"}
    assert sections["findings"].startswith("There is a 1.5 cm nodule")
    assert sections["impression"].startswith("1. No acute")
    assert "FINAL REPORT" not in " ".join(sections.values())


@pytest.mark.parametrize("text, expected", [
    ("findings: Heart normal. impression: Normal chest", {"findings": "Heart normal.", "impression": "Normal chest"}),
    ("Impressions: clear", {"impression": "clear"}),
    ("Just one sentence without headers.", {"findings": "Just one sentence without headers."}),
    ("Comparison: none\nIMPRESSION: clear", {"comparison": "none", "impression": "clear"}),
    ("Preface text. FINDINGS: a. FINDINGS: b.", {"preamble": "Preface text.", "findings": "a. b."}),
    ("   ", {}),
])
def test_sections_variants(text, expected):
    assert extract_sections(text) == expected


def test_report_sentences_handles_lists_decimals_abbreviations():
    assert report_sentences(MIMIC_STYLE) == [
        "There is a 1.5 cm nodule in the right upper lobe, e.g. near the hilum.",
        "No effusion or pneumothorax.",
        "Dr. ___ was notified at 3 p.m. on ___.",
        "No acute intrathoracic process.",
        "Nodule, approx. 1.5 cm.",
        "Stable cardiomegaly",
    ]
    assert report_sentences(MIMIC_STYLE, sections=("impression",))[0] == "No acute intrathoracic process."


@pytest.mark.parametrize("text, expected", [
    ("1. No effusion. 2. Small left pneumothorax. 3. Cardiomegaly",
     ["No effusion.", "Small left pneumothorax.", "Cardiomegaly"]),
    ("no effusion. mild atelectasis! is it pneumonia? unclear", ["no effusion.", "mild atelectasis!",
                                                                  "is it pneumonia?", "unclear"]),
    ("Tube tip 2.5 cm above the carina.", ["Tube tip 2.5 cm above the carina."]),
    ("Seen by Dr. J. Smith. Unchanged.", ["Seen by Dr. J. Smith.", "Unchanged."]),
    ("- Line in place\n- No pneumothorax", ["Line in place", "No pneumothorax"]),
    ("Called at 3 p.m. The heart is normal.", ["Called at 3 p.m.", "The heart is normal."]),
    ("Lungs ____ clear.\n\nHeart normal", ["Lungs ___ clear.", "Heart normal"]),
    ("...  .", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_normalize_sentence_is_a_stable_key():
    a = normalize_sentence("  No   pleural effusion.  ")
    assert a == normalize_sentence("no pleural effusion") == "no pleural effusion"
    assert normalize_sentence("1. Dr. ___ notified;") == "dr. ___ notified"
    assert normalize_sentence("No effusion.") != normalize_sentence("No pneumothorax.")


def test_cap_sentence():
    long = "x" * 150
    assert len(cap_sentence(long)) == MAX_SENTENCE_CHARS == 97
    assert cap_sentence("short") == "short"
    assert cap_sentence(long, 10) == "x" * 10
    with pytest.raises(ValueError):
        cap_sentence("a", 0)
