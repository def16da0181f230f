"""Reader of the reference MIMIC-CXR label CSVs: fixture rows, error reporting, and the README counts."""

from pathlib import Path

import pytest

from monai_vecl.reference_labels import (
    iter_label_rows,
    read_label_files,
    read_label_folder,
)

FIXTURE = Path(__file__).parent / "fixtures" / "core" / "reference_labels_sample.csv"
SHARED_LABELS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "vecl_mimic_llm_labels"


def test_fixture_rows_parse_and_stay_aligned_with_sentences():
    table = read_label_files([FIXTURE], errors="keep")
    raw_lines = FIXTURE.read_text().splitlines()
    assert table.stats.rows == len(table.rows) == len(raw_lines) == 194
    # Two fixture rows hold malformed LLM answers: kept as None, in place, and reported.
    assert table.stats.malformed == len(table.issues) >= 2
    for issue in table.issues:
        assert table.rows[issue.row - 1][issue.column - 1] is None
        assert "None" in issue.text
    assert sum(len(r) for r in table.rows) == table.stats.sentences
    assert all(labels is None or labels for row in table.rows for labels in row)


def test_quoted_multi_label_cells(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text('"15-,  2-,  3-",9+,25,0,0\n1+,"20+,  16+",0,0,0\n')
    rows = list(iter_label_rows(path))
    assert rows == [[("2-", "3-", "15-"), ("9+",), ("25",)], [("1+",), ("16+", "20+")]]


def test_errors_name_file_row_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("9+,25,0\n3-,None+,0\n")
    with pytest.raises(ValueError, match=r"bad\.csv: row 2, column 2: malformed label cell 'None\+'"):
        list(iter_label_rows(path))
    path.write_text("9+,0,3-\n")
    with pytest.raises(ValueError, match=r"row 1, column 3: .*after padding"):
        list(iter_label_rows(path))
    with pytest.raises(ValueError, match="errors"):
        read_label_files([path], errors="ignore")


@pytest.mark.skipif(not SHARED_LABELS.is_dir(), reason="shared reference label folder not present")
def test_full_reference_folder_reproduces_readme_counts():
    table = read_label_folder(SHARED_LABELS, errors="keep")
    stats = table.stats
    assert stats.rows == len(table.rows) == 106_416
    assert stats.sentences == 1_451_201
    assert stats.distinct_cells == 4_196
    assert [stats.label_counts[k] for k in ("3-", "2-", "25", "2+", "1+")] == [242_785, 198_426, 153_623, 152_154, 151_396]
    assert [k for k, _ in stats.label_counts.most_common(5)] == ["3-", "2-", "25", "2+", "1+"]
    assert stats.malformed == len(table.issues) > 0
