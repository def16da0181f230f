"""Rules labeler: lexicon, negation scope, pseudo-negation, uncertainty policy."""

import pytest

from monai_vecl.labeling import build_labeler
from monai_vecl.labeling.rules import RulesLabeler


@pytest.mark.parametrize("sentence, labels", [
    ("There is a small left pleural effusion.", ("2+",)),
    ("No focal consolidation, pleural effusion, or pneumothorax.", ("2-", "3-", "15-")),
    ("Lungs are free of effusion.", ("2-",)),
    ("Negative for pneumothorax.", ("3-",)),
    ("Without evidence of edema.", ("8-",)),
    ("Left lower lobe pneumonia has resolved.", ("6-",)),
    ("Resolved right pneumothorax.", ("3-",)),
    ("The pneumothorax is no longer seen.", ("3-",)),
    ("There is no change in the small left pleural effusion.", ("2+",)),
    ("No interval change in moderate cardiomegaly.", ("4+",)),
    ("No pneumothorax, but there is a small right effusion.", ("2+", "3-")),
    ("Moderate cardiomegaly with no effusion.", ("4+", "2-")),
    ("Heart size is normal.", ("4-",)),
    ("The heart is not enlarged.", ("4-",)),
    ("The cardiac silhouette is enlarged.", ("4+",)),
    ("Stable calcified granuloma in the right upper lobe.", ("23+",)),
    ("The NG tube has been removed.", ("20-",)),
    ("Endotracheal tube terminates 4 cm above the carina.", ("20+",)),
    ("Small pericardial effusion.", ("25",)),
    ("No acute cardiopulmonary process.", ("25",)),
    ("Dr. ___ was notified.", ("25",)),
    ("Multiple masses and nodules.", ("7+", "9+")),
    ("No new effusion; stable small left effusion.", ("2+",)),
    ("The lungs are clear.", ("5-",)),
    ("The costophrenic angles are sharp.", ("2-",)),
    ("Pulmonary vasculature is not engorged.", ("8-",)),
    ("No acute osseous abnormality.", ("16-",)),
    ("There is extensive subcutaneous emphysema.", ("25",)),
])
def test_rules_cases(sentence, labels):
    assert RulesLabeler().labels_of(sentence) == labels


# Read the way a radiologist reads (each of these was wrong in rules-v1).
@pytest.mark.parametrize("sentence, labels", [
    ("Right apical scarring as before.", ("25",)),                      # a scar is not pulmonary fibrosis
    ("Bibasilar fibrotic changes.", ("11+",)),
    ("Findings of cystic fibrosis.", ("25",)),
    ("The lungs are hyperinflated.", ("25",)),                          # a sign, not emphysema
    ("Hyperinflation with emphysematous changes.", ("12+",)),
    ("Bullous emphysema in the upper lobes.", ("12+",)),
    ("Residuals of prior granulomatous infection.", ("22+",)),          # not pneumonia
    ("Calcified left lower lobe 5 mm granuloma.", ("23+",)),            # not also granuloma and calcification
    ("Granulomas in the right hilum are calcified.", ("23+",)),
    ("Scattered granulomas without calcification.", ("22+", "24-")),
    ("Atherosclerotic calcifications of the aorta.", ("25",)),          # atherosclerosis, a vascular disease
    ("Calcified mediastinal lymph nodes.", ("24+",)),
    ("Right chest ___ with tip at the cavoatrial junction.", ("20+",)),  # the de-identified word was the port
    ("Left-sided pacer with leads in the right atrium.", ("20+",)),
    ("There is a 6 mm nodular opacity in the right midlung.", ("5+",)),  # an opacity, not a nodule
    ("Left lower lobe pneumonitis.", ("6+",)),
    ("Masslike opacification of the right apex.", ("5+", "7+")),
    ("No definite pleural effusion seen, left hilar calcifications.", ("24+", "2-")),
])
def test_radiologist_reading(sentence, labels):
    assert RulesLabeler().labels_of(sentence) == labels


def test_rules_lexicon_reads_the_taxonomy_with_corrections():
    from monai_vecl.labeling.rules import rules_lexicon
    from monai_vecl.taxonomy import SYNONYMS

    lexicon = rules_lexicon()
    assert "scarring" in SYNONYMS[11] and "scarring" not in lexicon[11] and "fibrotic changes" in lexicon[11]
    assert "hyperinflation" not in lexicon[12] and "emphysematous changes" in lexicon[12]
    assert set(lexicon[2]) >= set(SYNONYMS[2])


@pytest.mark.parametrize("policy, expected", [("positive", ("6+",)), ("negative", ("6-",)), ("no_mention", ("25",))])
def test_uncertainty_policy(policy, expected):
    assert RulesLabeler().uncertainty == "no_mention"  # the default, chosen on the Open-I benchmark
    labeler = build_labeler({"backend": "rules", "uncertainty": policy})
    assert labeler.labels_of("Pneumonia cannot be excluded.") == expected
    assert labeler.labels_of("Possible right lower lobe pneumonia.") == expected
    # negation beats doubt, and a certain mention before the doubt stays positive
    assert labeler.labels_of("No evidence to suggest pneumonia.") == ("6-",)
    assert "5+" in labeler.labels_of("Basal opacity may reflect atelectasis.")


def test_batch_aligns_and_records_backend():
    labeler = RulesLabeler()
    sentences = ["No effusion.", "Small pneumothorax.", "Normal study."]
    results = labeler.label_batch(sentences)
    assert [r.labels for r in results] == [("2-",), ("3+",), ("25",)]
    assert {r.backend for r in results} == {"rules"}
    assert labeler.identity == "rules/rules-v2/uncertainty=no_mention"


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="uncertainty"):
        RulesLabeler(uncertainty="maybe")
    with pytest.raises(ValueError, match="unknown finding"):
        RulesLabeler(synonyms={30: ("thing",)})
    with pytest.raises(ValueError, match="unknown labeling backend"):
        build_labeler({"backend": "magic"})


def test_custom_synonyms():
    labeler = RulesLabeler(synonyms={3: ("ptx",)})
    assert labeler.labels_of("No ptx.") == ("3-",)
    assert labeler.labels_of("No effusion.") == ("25",)
