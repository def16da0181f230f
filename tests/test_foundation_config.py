"""The shared configuration checks (monai_vecl.config) the deploy and gateway configs rely on."""

from dataclasses import dataclass, field

import pytest

from monai_vecl.config import check_choice, check_dataclass, check_fields


@dataclass
class _Options:
    name: str = "a"
    limit: float | None = None
    weights: dict[str, float] = field(default_factory=dict)
    views: tuple[str, ...] = ()


def test_dict_keys_and_values_are_checked():
    check_fields(_Options, {"weights": {"Pneumothorax": 0.5, "Edema": 1}})
    with pytest.raises(TypeError, match=r"_Options.weights must be dict\[str, float\], got .*'0.5'"):
        check_fields(_Options, {"weights": {"Pneumothorax": "0.5"}})


def test_type_names_read_as_written_in_yaml():
    with pytest.raises(TypeError, match=r"_Options.limit must be float \| None, got '1' of type str"):
        check_fields(_Options, {"limit": "1"})
    with pytest.raises(TypeError, match=r"_Options.views must be tuple\[str, \.\.\.\]"):
        check_fields(_Options, {"views": "PA"})


def test_check_dataclass_checks_a_constructed_instance():
    check_dataclass(_Options(limit=2))
    with pytest.raises(TypeError, match="_Options.name must be str"):
        check_dataclass(_Options(name=3))


def test_check_choice_names_the_accepted_values():
    assert check_choice("deploy.score_mode", "pnc", ("pnc", "pos")) == "pnc"
    with pytest.raises(ValueError, match=r"deploy.score_mode must be one of \['pnc', 'pos'\], got 'PNC'"):
        check_choice("deploy.score_mode", "PNC", ("pnc", "pos"))


def test_messages_name_the_section_when_given():
    with pytest.raises(ValueError, match=r"unknown deploy.x option\(s\) \['nmae'\]"):
        check_fields(_Options, {"nmae": "b"}, "deploy.x")
    with pytest.raises(TypeError, match="deploy.x.name must be str"):
        check_dataclass(_Options(name=1), "deploy.x")
