"""Series selection: frontal chest CR/DX chosen in the configured order; everything else skipped with a reason."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from monai_vecl.deploy.selection import SelectionConfig, is_chest, select_frontal_chest, view_of


def header(modality="DX", view="PA", body_part="CHEST", **tags) -> Dataset:
    ds = Dataset()
    ds.Modality = modality
    if view is not None:
        ds.ViewPosition = view
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.Rows = ds.Columns = 100
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def coded(meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "x", "SCT", meaning
    return item


def test_pa_is_preferred_over_ap_and_lateral_is_rejected():
    headers = [header(view="LL"), header(view="AP"), header(view="PA")]
    selection = select_frontal_chest(headers)
    assert selection.candidates == [2, 1]
    assert selection.rejected == {0: "lateral view"}
    assert selection.reason is None


def test_configured_view_order_and_presentation_before_processing():
    config = SelectionConfig(views=("AP", "PA"))
    headers = [
        header(view="PA"),
        header(view="AP", PresentationIntentType="FOR PROCESSING"),
        header(view="AP", PresentationIntentType="FOR PRESENTATION"),
    ]
    assert select_frontal_chest(headers, config).candidates == [2, 1, 0]
    large = header(view="PA", Rows=2000, Columns=2000)
    assert select_frontal_chest([header(view="PA"), large]).candidates == [1, 0]


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([header(view="LL"), header(view="RL")], "lateral view"),
        ([header(body_part="HAND")], "body part HAND is not chest"),
        ([header(modality="CT")], "modality CT not in"),
        ([header(view=None)], "view position not stated"),
        ([header(body_part=None)], "body part not stated"),
        ([], "study has no instances"),
    ],
)
def test_studies_without_a_frontal_chest_image_get_a_reason(headers, expected):
    selection = select_frontal_chest(headers)
    assert selection.candidates == []
    assert expected in selection.reason
    assert len(selection.rejected) == len(headers)  # every instance accounted for


def test_view_and_body_part_fall_back_to_codes_and_descriptions():
    ds = header(view=None, body_part=None, StudyDescription="XR CHEST 2 VIEWS")
    ds.ViewCodeSequence = [coded("postero-anterior")]
    assert view_of(ds) == "PA" and is_chest(ds, SelectionConfig().body_parts) is True
    ds.ViewCodeSequence = [coded("left lateral")]
    assert view_of(ds) == "LATERAL"
    lateral_by_series = header(view=None, SeriesDescription="CHEST LAT")
    assert view_of(lateral_by_series) == "LATERAL"
    knee = header(view="AP", body_part=None)
    knee.AnatomicRegionSequence = [coded("Knee")]
    assert is_chest(knee, SelectionConfig().body_parts) is False


def test_unknown_view_is_read_only_when_allowed():
    headers = [header(view=None)]
    assert select_frontal_chest(headers, SelectionConfig(allow_unknown_view=True)).candidates == [0]


def test_selection_config_rejects_typos_and_wrong_types():
    with pytest.raises(ValueError, match=r"unknown deploy.selection option\(s\) \['view'\]"):
        SelectionConfig.from_mapping({"view": ["PA"]})
    assert SelectionConfig.from_mapping({"views": ["ap"]}).views == ("AP",)
    with pytest.raises(TypeError, match="deploy.selection.allow_unknown_view must be bool, got 'false'"):
        SelectionConfig.from_mapping({"allow_unknown_view": "false"})
    with pytest.raises(TypeError, match=r"deploy.selection.modalities must be tuple\[str, \.\.\.\]"):
        SelectionConfig.from_mapping({"modalities": "DX"})
    with pytest.raises(ValueError, match=r"deploy.selection.views\[\] must be one of \['PA', 'AP'\], got 'LL'"):
        SelectionConfig(views=("PA", "LL"))
