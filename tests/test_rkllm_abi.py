"""The ctypes layouts of both ABI families agree with the measured layouts file, field by field."""

import json
import os
from pathlib import Path

import pytest

from rkollama.backends.rkllm import abi

# The measured layouts live beside the project (../shared/data); tests/data keeps a copy so a
# checkout elsewhere still tests against them, and a test keeps the copy identical.
SHARED_PATH = Path(os.environ.get("RKOLLAMA_SHARED", Path(__file__).resolve().parents[2] / "shared")) \
    / "data" / "rkllm_abi_layouts.json"
COPY_PATH = Path(__file__).parent / "data" / "rkllm_abi_layouts.json"
LAYOUTS = json.loads((SHARED_PATH if SHARED_PATH.is_file() else COPY_PATH).read_text())
RELEASES = {"1.2": ["1.2.1", "1.2.2", "1.2.3"], "1.3": ["1.3.0"], "1.3.1": ["1.3.1"]}


def releases():
    return [(fam, rel) for fam, rels in RELEASES.items() for rel in rels]


@pytest.mark.parametrize("family_name,release", releases())
def test_every_struct_matches_the_measured_layout(family_name, release):
    fam = abi.family(family_name)
    measured = {k: v for k, v in LAYOUTS["releases"][release].items() if not k.startswith("_")}
    for struct, expected in measured.items():
        cls = getattr(fam, struct)
        assert abi.sizeof(cls) == expected["size"], (release, struct, "size")
        assert abi.alignment(cls) == expected["align"], (release, struct, "align")
        ours = abi.layout(cls)
        for field, (offset, size) in expected["fields"].items():
            assert ours.get(field) == (offset, size), (release, struct, field, ours.get(field))


@pytest.mark.skipif(not SHARED_PATH.is_file(), reason="no ../shared beside this checkout")
def test_the_copy_of_the_layouts_file_is_identical():
    assert json.loads(COPY_PATH.read_text()) == json.loads(SHARED_PATH.read_text())


def test_families_are_distinct_and_unknown_ones_refused():
    assert abi.sizeof(abi.family("1.2").RKLLMParam) == 208
    assert abi.sizeof(abi.family("1.3").RKLLMParam) == 184
    with pytest.raises(AttributeError):
        _ = abi.family("1.2").RKLLMSamplingParam
    with pytest.raises(ValueError):
        abi.family("1.1")


@pytest.mark.parametrize("family_name,release", [("1.2", "1.2.3"), ("1.3", "1.3.0"), ("1.3.1", "1.3.1")])
def test_the_c_double_agrees_with_the_layouts_file_and_ctypes(fake_runtime, family_name, release):
    import ctypes

    lib = ctypes.CDLL(str(fake_runtime[family_name]))
    lib.fake_layout_json.restype = ctypes.c_char_p
    double = json.loads(lib.fake_layout_json())
    measured = {k: v for k, v in LAYOUTS["releases"][release].items() if not k.startswith("_")}
    assert set(double) == set(measured)
    fam = abi.family(family_name)
    for struct, expected in measured.items():
        assert double[struct]["size"] == expected["size"] == abi.sizeof(getattr(fam, struct)), struct
        assert double[struct]["align"] == expected["align"], struct
        for field, place in expected["fields"].items():
            assert double[struct]["fields"][field] == place, (struct, field)
