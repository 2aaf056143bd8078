"""Session options: one argparse parser per session; the rest passed through."""

import pytest

from devkit import DevkitError
from devkit.toolchains import options


def test_own_options_parsed_and_the_rest_passed_through_in_order():
    found = options.parse("build-cuda", ["--arch", "9.0", "-v", "--use-existing-torch", "-x"])
    assert (found.arch, found.use_existing_torch, found.rest) == ("9.0", True, ("-v", "-x"))
    assert options.parse("build-cuda", ["--arch=hopper"]).arch == "hopper"
    found = options.parse("test-kernels-cpu", ["-k", "rms_norm", "tests/kernels"])
    assert found.rest == ("-k", "rms_norm", "tests/kernels") and found.arch is None
    # No abbreviations: --ar goes to uv, not to --arch.
    assert options.parse("build-cuda", ["--ar", "x"]).rest == ("--ar", "x")


def test_help_lists_the_sessions_own_options():
    with pytest.raises(options.HelpShown) as shown:
        options.parse("build-cuda", ["-v", "--help"])
    text = " ".join(str(shown.value).split())
    assert text.startswith("usage: nox -s build-cuda")
    assert "--arch ARCH" in text and "--use-existing-torch" in text
    assert "--index" not in text and "go to uv pip install" in text
    with pytest.raises(options.HelpShown, match=r"--target \{cpu,cuda,rocm\}"):
        options.parse("clean", ["-h"])


def test_bad_input_is_one_line_naming_the_help():
    with pytest.raises(DevkitError, match=r"^nox -s wheel: argument --target: invalid choice"):
        options.parse("wheel", ["--target", "gpu"])
    with pytest.raises(DevkitError, match=r"--arch: expected one argument; see `nox -s build-cuda"):
        options.parse("build-cuda", ["--arch"])
    with pytest.raises(DevkitError, match=r"^nox -s clean takes no argument '--bogus'; see `nox"):
        options.parse("clean", ["--all", "--bogus"])


def test_against_takes_a_ref_or_means_the_merge_base():
    parse = options.parse
    assert parse("bench-kernels", ["--tokens", "8"]).against is None
    assert parse("bench-kernels", ["--against", "HEAD~1", "-x"]).against == "HEAD~1"
    found = parse("bench-kernels", ["--against", "--rounds", "2"])
    assert (found.against, found.rest) == ("", ("--rounds", "2"))
    assert parse("bench-kernels", ["--against=abc"]).against == "abc"
    with pytest.raises(DevkitError, match="takes no argument '--against'"):
        parse("clean", ["--against", "HEAD"])
