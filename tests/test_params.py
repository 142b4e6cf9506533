import pytest

from vqstudy import params


def test_profiles_resolve_with_overrides():
    quick = params.resolve("tokens_collapse", "quick")
    smoke = params.resolve("tokens_collapse", "smoke", {"seeds": [4, 5]})
    assert quick["profile"] == "quick" and len(quick["seeds"]) >= 3
    assert smoke["seeds"] == [4, 5] and smoke["total_steps"] < quick["total_steps"]
    assert params.resolve("tokens_collapse", "smoke", {"lr": 1})["lr"] == 1.0  # an int may stand for a float


@pytest.mark.parametrize("profile, overrides, message", [
    ("fast", {}, "profile='fast' is not a profile"),
    ("smoke", {"codebok_sizes": [8]}, "unknown parameter 'codebok_sizes'"),
    ("smoke", {"codebook_sizes": [0, 8]}, r"codebook_sizes=\[0, 8\] is out of range"),
    ("smoke", {"total_steps": -1}, "total_steps=-1 is out of range"),
    ("smoke", {"total_steps": "100"}, "total_steps='100' has the wrong type"),
    ("smoke", {"seeds": 3}, "seeds=3 has the wrong type"),
    ("smoke", {"device": "tpu"}, "device='tpu'"),
])
def test_bad_parameters_name_the_parameter_and_the_value(profile, overrides, message):
    with pytest.raises(ValueError, match=message):
        params.resolve("tokens_collapse", profile, overrides)


def test_notebook_parameters_detects_names_injected_after_the_parameters_cell():
    namespace = {"pd": object()}
    before = set(namespace)
    namespace.update(profile="smoke", seeds=None, codebook_sizes=None)  # the parameters cell
    assert params.notebook_parameters("tokens_collapse", namespace, before)["seeds"] == [0]
    namespace["seeds"] = [7]  # papermill's injected cell
    assert params.notebook_parameters("tokens_collapse", namespace, before)["seeds"] == [7]
    namespace["sedes"] = [1]  # a misspelling
    with pytest.raises(ValueError, match="unknown parameter 'sedes'"):
        params.notebook_parameters("tokens_collapse", namespace, before)
