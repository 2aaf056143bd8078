"""Session options: one argparse parser per session; the rest passed through."""

import pytest

from devkit import DevkitError, options


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


def test_the_caller_without_a_session_gets_every_option():
    found = options.parse(None, ["--target", "cpu", "--index", "/srv", "--all", "more"])
    assert (found.target, found.index, found.all, found.rest) == ("cpu", "/srv", True, ("more",))
    assert set(options.SESSIONS) > {"build-cpu", "build-cuda", "clean", "build-profile"}
