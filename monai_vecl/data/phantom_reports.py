"""Radiology-style reports for phantom cases, with the true signed labels of every sentence.

Present findings are stated positively (with size, severity, side and location words, sometimes
hedged: a hedged mention of a drawn finding is still a positive mention); absent findings are
negated in the groupings real reports use (``negative_cells`` of :mod:`phantom_stats`, e.g.
"No focal consolidation, pleural effusion or pneumothorax."); technique, comparison and
normal-anatomy sentences carry No Mention (25). Counts of negative and No Mention sentences
follow the real per-image distributions.
"""

from __future__ import annotations

import numpy as np

from monai_vecl.data.phantom_anatomy import (
    ATELECTASIS,
    CARDIOMEGALY,
    CONSOLIDATION,
    DEVICES,
    EDEMA,
    EFFUSION,
    FRACTURE,
    MASS,
    NODULE,
    OPACITY,
    PNEUMONIA,
    PNEUMOTHORAX,
    Case,
)
from monai_vecl.data.phantom_stats import STATS

Sentence = tuple[str, str, tuple[str, ...]]  # (section, text, signed labels)

#: Noun phrases used when a finding is negated inside a list ("No X, Y or Z.").
NEGATED_NOUNS: dict[int, tuple[str, ...]] = {
    1: ("atelectasis",), 2: ("pleural effusion", "effusion"), 3: ("pneumothorax",), 4: ("cardiomegaly",),
    5: ("focal opacity", "airspace opacity"), 6: ("pneumonia",), 7: ("mass", "pulmonary mass"),
    8: ("pulmonary edema", "edema", "vascular congestion"), 9: ("nodule", "pulmonary nodule"),
    10: ("infiltrate",), 11: ("fibrosis",), 12: ("emphysema",), 13: ("pleural thickening",), 14: ("hiatal hernia",),
    15: ("focal consolidation", "consolidation"), 16: ("fracture", "displaced fracture"),
    17: ("mediastinal widening",), 18: ("pleural abnormality",), 19: ("lung lesion",), 20: ("support devices",),
    21: ("lesion",), 22: ("granuloma",), 23: ("calcified granuloma",), 24: ("calcification",),
}
#: Whole-sentence negations for single findings, beside the generic list forms.
NEGATED_SENTENCES: dict[tuple[int, ...], tuple[str, ...]] = {
    (2,): ("The costophrenic angles are sharp.", "No pleural effusions are seen."),
    (3,): ("No pneumothorax is seen.", "There is no evidence of pneumothorax."),
    (4,): ("Heart size is normal.", "The heart is not enlarged.", "Cardiac silhouette is within normal limits."),
    (5,): ("The lungs are clear.", "Lungs are clear bilaterally."),
    (8,): ("No signs of pulmonary edema.", "Pulmonary vasculature is not engorged."),
    (16,): ("No acute osseous abnormality.", "No displaced rib fracture is identified."),
    (17,): ("The mediastinal contours are normal.", "Mediastinal contours are unremarkable."),
    (20,): ("No lines or tubes are seen.",),
    (4, 17): ("The cardiomediastinal silhouette is normal.", "Heart size and mediastinal contours are normal."),
    (2, 3): ("There is no pleural effusion or pneumothorax.", "No pneumothorax or pleural effusion is seen."),
    (2, 3, 15): (
        "No focal consolidation, pleural effusion or pneumothorax.",
        "The lungs are clear without focal consolidation, effusion, or pneumothorax.",
    ),
}
_LIST_FORMS = ("No {}.", "There is no {}.", "No evidence of {}.", "No {} is seen.", "No definite {}.")

#: Sentences with no finding in the taxonomy (label 25).
NO_MENTION = (
    "PA and lateral views of the chest were obtained.", "Frontal view of the chest was obtained.",
    "Comparison is made to the prior radiograph.", "Unchanged from the prior study.",
    "Degenerative changes are seen in the thoracic spine.", "The thoracic aorta is mildly tortuous.",
    "The visualized upper abdomen is unremarkable.", "Hilar contours are normal.",
    "Mild thoracic dextroscoliosis.", "Low lung volumes.", "Findings were discussed with the referring clinician.",
    "Portable semi-upright radiograph.", "No acute cardiopulmonary process.",
)

_SEVERITY = {1: "mild", 2: "moderate", 3: "severe"}
_ORDINAL = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_LOBE = {("right", "upper"): "right upper lobe", ("right", "mid"): "right middle lobe",
         ("right", "lower"): "right lower lobe", ("left", "upper"): "left upper lobe",
         ("left", "mid"): "lingula", ("left", "lower"): "left lower lobe"}
# Report order of organ systems: devices, lungs, pleura, heart, bones (No Mention sentences go anywhere).
_ORGAN = {20: 0, 2: 2, 3: 2, 13: 2, 18: 2, 4: 3, 17: 3, 14: 3, 16: 4}
#: Field of view is about 40 cm over the frame's 2 units.
CM_PER_UNIT = 20.0


def _pick(rng: np.random.Generator, options) -> str:
    return options[rng.integers(len(options))]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _sides(sides: list[str], both: str = "bilateral") -> str:
    return both if len(sides) == 2 else sides[0]


def positive_sentences(case: Case, rng: np.random.Generator) -> list[tuple[str, tuple[int, ...]]]:
    """One or more sentences stating every drawn finding, with the codes each one mentions."""
    f = case.findings
    out: list[tuple[str, tuple[int, ...]]] = []
    pick = lambda *opts: _cap(_pick(rng, opts))  # noqa: E731 - local shorthand
    if EFFUSION in f:
        e = f[EFFUSION]
        side, size = _sides(e["sides"]), e["size"]
        plural = "s" if len(e["sides"]) == 2 else ""
        codes: tuple[int, ...] = (EFFUSION,)
        if ATELECTASIS in f and f[ATELECTASIS]["sides"] == e["sides"] and rng.random() < 0.5:
            codes = (EFFUSION, ATELECTASIS)
            out.append((pick(f"{size} {side} pleural effusion{plural} with adjacent atelectasis.",
                             f"{size} {side} pleural effusion{plural} and associated basilar atelectasis."), codes))
        else:
            options = [f"{size} {side} pleural effusion{plural}.", f"there is a {size} {side} pleural effusion{plural}."
                       if not plural else f"there are {size} bilateral pleural effusions.",
                       f"{size} {side} effusion{plural} noted."]
            if size == "small":
                options += [f"possible small {side} pleural effusion{plural}.",
                            f"blunting of the {side} costophrenic angle{plural} suggests a small effusion{plural}."]
            out.append((pick(*options), codes))
    if ATELECTASIS in f and not any(ATELECTASIS in c for _, c in out):
        t = f[ATELECTASIS]
        sev = _pick(rng, ("minimal ", "mild ", "", "streaky "))
        if t["kind"] == "lobar":
            s = t["sides"][0]
            out.append((pick(f"{s} lower lobe atelectasis with volume loss.",
                             f"elevation of the {s} hemidiaphragm with adjacent atelectasis.",
                             f"{sev}{s} basal atelectasis."), (ATELECTASIS,)))
        else:
            where = "bibasilar" if len(t["sides"]) == 2 else f"{t['sides'][0]} basilar"
            out.append((pick(f"{sev}{where} atelectasis.", f"{sev}plate-like atelectasis at the {where} lung.",
                             f"{sev}{where} subsegmental atelectasis.", f"probable {where} atelectasis."),
                        (ATELECTASIS,)))
    if PNEUMOTHORAX in f:
        p = f[PNEUMOTHORAX]
        s, size = p["side"], p["size"]
        options = [f"{size} {s} pneumothorax.", f"there is a {size} {s} pneumothorax.",
                   f"{s} pneumothorax is {size}.", f"{size} {s} apical pneumothorax is present."]
        if size == "small":
            options += [f"tiny {s} apical pneumothorax.", f"possible small {s} apical pneumothorax."]
        out.append((pick(*options), (PNEUMOTHORAX,)))
    if CARDIOMEGALY in f:
        sev = _SEVERITY[f[CARDIOMEGALY]["severity"]]
        adv = sev[:-1] + "ly" if sev != "severe" else "severely"
        out.append((pick(f"{sev} cardiomegaly.", f"the heart is {adv} enlarged.", f"heart size is {adv} enlarged.",
                         f"there is {sev} enlargement of the cardiac silhouette."), (CARDIOMEGALY,)))
    region_codes = tuple(c for c in (OPACITY, PNEUMONIA, CONSOLIDATION) if c in f)
    if region_codes:
        r = next(f[c]["region"] for c in (CONSOLIDATION, PNEUMONIA, OPACITY) if c in f)
        lobe, zone_words = _LOBE[(r["side"], r["zone"])], f"{r['side']} {r['zone']} lung"
        table = {
            (OPACITY,): (f"hazy opacity in the {zone_words}.", f"ill-defined {zone_words} opacity.",
                         f"patchy opacity projects over the {zone_words}."),
            (PNEUMONIA,): (f"findings consistent with {lobe} pneumonia.", f"{lobe} pneumonia.",
                           f"likely {lobe} pneumonia."),
            (CONSOLIDATION,): (f"{lobe} consolidation.", f"focal consolidation in the {lobe}.",
                               f"there is dense consolidation in the {lobe}."),
            (OPACITY, PNEUMONIA): (f"{lobe} opacity concerning for pneumonia.",
                                   f"new opacity in the {lobe} may represent pneumonia."),
            (PNEUMONIA, CONSOLIDATION): (f"{lobe} consolidation compatible with pneumonia.",
                                         f"consolidation in the {lobe} is concerning for pneumonia."),
            (OPACITY, CONSOLIDATION): (f"{lobe} opacity, likely consolidation.",
                                       f"dense opacity in the {lobe} consistent with consolidation."),
            (OPACITY, PNEUMONIA, CONSOLIDATION): (f"{lobe} opacity and consolidation suggesting pneumonia.",),
        }
        out.append((pick(*table[region_codes]), region_codes))
    for code, noun in ((MASS, "mass"), (NODULE, "nodule")):
        if code in f:
            n = f[code]
            cm = 2 * n["radius"] * CM_PER_UNIT
            size = f"{cm:.1f} cm" if code == MASS else f"{round(cm * 10)} mm"
            lobe = _LOBE[(n["side"], n["zone"])]
            options = [f"{size} {noun} in the {lobe}.", f"there is a {n['side']} {n['zone']} lung {noun} measuring {size}.",
                       f"a {size} {lobe} {noun} is noted."]
            options.append(f"possible {lobe} {noun}." if code == NODULE else f"large lobulated {lobe} mass.")
            out.append((pick(*options), (code,)))
    if EDEMA in f:
        sev = _SEVERITY[f[EDEMA]["severity"]]
        out.append((pick(f"{sev} pulmonary edema.", f"{sev} interstitial edema.",
                         f"findings are consistent with {sev} pulmonary edema.", f"{sev} pulmonary vascular congestion."),
                    (EDEMA,)))
    if FRACTURE in f:
        fr = f[FRACTURE]
        rib = f"{fr['side']} {_ORDINAL[fr['rib'] + 1]}"
        if fr["age"] == "healed":
            options = (f"old healed {rib} rib fracture.", f"healed fracture of the {rib} posterior rib.")
        else:
            options = (f"acute fracture of the {rib} posterior rib.", f"there is a displaced {rib} rib fracture.",
                       f"mildly displaced {rib} rib fracture.")
        out.append((pick(*options), (FRACTURE,)))
    if DEVICES in f:
        device_text = {
            "et_tube": ("endotracheal tube terminates {} cm above the carina.", "ET tube is in standard position."),
            "ng_tube": ("enteric tube courses below the diaphragm.", "nasogastric tube tip is in the stomach."),
            "central_line": ("right subclavian line tip is in the lower SVC.",
                             "right-sided central venous catheter ends at the cavoatrial junction."),
            "pacemaker": ("left-sided pacemaker with leads in the right atrium and right ventricle.",
                          "dual-lead pacemaker is unchanged."),
            "sternotomy_wires": ("median sternotomy wires are intact.", "the patient is status post median sternotomy."),
        }
        for kind in f[DEVICES]["devices"]:
            text = _pick(rng, device_text[kind])
            out.append((_cap(text.format(rng.integers(3, 7))), (DEVICES,)))
    return out


def negative_sentences(blocked: set[int], rng: np.random.Generator) -> list[tuple[str, tuple[int, ...]]]:
    """Negated-finding sentences: each real grouping (``negative_cells``, e.g. effusion + pneumothorax) that
    names no blocked finding is said with the rate real reports say it when its findings are absent."""
    out = []
    for codes, rate in STATS["negative_cell_rate"]:
        if set(codes) & blocked or rng.random() >= rate:
            continue
        if codes in NEGATED_SENTENCES and rng.random() < 0.5:
            out.append((_pick(rng, NEGATED_SENTENCES[codes]), codes))
            continue
        nouns = [_pick(rng, NEGATED_NOUNS[c]) for c in rng.permutation(codes)]
        conj = _pick(rng, (" or ", ", or ")) if len(nouns) > 2 else " or "
        listed = nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + conj + nouns[-1]
        out.append((_cap(_pick(rng, _LIST_FORMS).format(listed)), codes))
    return out


def _count(rng: np.random.Generator, histogram: list[tuple[int, int]]) -> int:
    values = np.array([v for v, _ in histogram])
    p = np.array([c for _, c in histogram], np.float64)
    return int(rng.choice(values, p=p / p.sum()))


def write_report(case: Case, rng: np.random.Generator) -> list[Sentence]:
    """FINDINGS then IMPRESSION sentences, each with its signed labels."""
    present = set(case.findings)
    # "The lungs are clear" / "No focal opacity" would contradict any drawn parenchymal density.
    lung_density = {ATELECTASIS, PNEUMONIA, MASS, EDEMA, NODULE, CONSOLIDATION}
    blocked = present | ({OPACITY} if present & lung_density else set())
    signed = lambda items, sign: [(text, tuple(f"{c}{sign}" for c in codes)) for text, codes in items]  # noqa: E731
    positives = signed(positive_sentences(case, rng), "+")
    negatives = signed(negative_sentences(blocked, rng), "-")
    others = [(_pick(rng, NO_MENTION), ("25",)) for _ in range(_count(rng, STATS["n_no_mention_sentences"]))]

    def organ_order(item: tuple[str, tuple[str, ...]]) -> float:
        labels = item[1]
        organ = rng.uniform(-0.5, 4.5) if labels == ("25",) else _ORGAN.get(int(labels[0][:-1]), 1)
        return organ + rng.uniform(0, 0.4)

    body = sorted(positives + negatives + others, key=organ_order) or [(_pick(rng, NO_MENTION), ("25",))]
    if positives:
        pool = signed(positive_sentences(case, rng), "+")
        impression = [pool[i] for i in sorted(rng.permutation(len(pool))[: 1 + rng.integers(min(3, len(pool)))])]
    elif rng.random() < 0.7:
        impression = [(_pick(rng, ("No acute cardiopulmonary process.", "No acute intrathoracic abnormality.")), ("25",))]
    else:
        impression = []
    return [("FINDINGS", t, lab) for t, lab in body] + [("IMPRESSION", t, lab) for t, lab in impression]


def report_text(sentences: list[Sentence]) -> str:
    """Full report text with FINDINGS and IMPRESSION headers."""
    parts = []
    for section in ("FINDINGS", "IMPRESSION"):
        texts = [text for sec, text, _ in sentences if sec == section]
        if texts:
            parts.append(f"{section}: " + " ".join(texts))
    return "\n\n".join(parts)
