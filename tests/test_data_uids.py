"""The one deterministic UID scheme (monai_vecl.data.uids)."""

import pydicom
import pytest

from monai_vecl.data.uids import deterministic_uid


def test_same_parts_same_valid_uid():
    uid = deterministic_uid("sr", "1.2.3", 0.5)
    assert uid == deterministic_uid("sr", "1.2.3", "0.5")
    assert pydicom.uid.UID(uid).is_valid and len(uid) <= 64
    assert uid.startswith(pydicom.uid.PYDICOM_ROOT_UID)


def test_part_boundaries_matter():
    # pydicom alone concatenates its entropy sources: ("ab", "c") and ("a", "bc") would be one UID
    assert deterministic_uid("ab", "c") != deterministic_uid("a", "bc")
    assert deterministic_uid("a") != deterministic_uid("a", "")


def test_needs_a_part():
    with pytest.raises(ValueError, match="at least one part"):
        deterministic_uid()
