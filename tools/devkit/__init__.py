"""devkit: the developer workflow behind noxfile.py and the build backend.

Standard library only, so that nox's own environment and the project venv (via
the PEP 517 backend in backend.py) can both import it. One module per concern:

    envs        the env-var registry (vllm/envs.py), loaded from the source tree
    optable     the op table (vllm/_op_table.py) and the C++/CMake/docs views of it
    layout      every path devkit makes: build root and dirs, venvs, caches, marks
    targets     the table of build targets: torch pin, index, per-job memory
    sources     where torch comes from: the target's index, the user's pip mirrors
    resources   how many compile jobs, and why
    compiler_cache  ccache, or sccache with a shared store (VLLM_COMPILER_CACHE_REMOTE)
    toolchain   tools on PATH, what a built library links in
    cuda, rocm  GPU toolchains and archs
    plan        the build plan: one resolve of all of the above, for every build
    venv        a session's venv: checked before use, made under a temporary name
    lock        one session per venv and per build directory (flock), leftovers stopped
    procs       each command in a process group of its own; SIGTERM/SIGHUP as one line
    cmakecache  the CMake cache follows CMAKE_ARGS
    pipeline    the steps of a build session, and its summary line
    options     each session's options (argparse), and what it passes through
    progress    live progress of a build, followed from its build dir
    presets     CMakeUserPresets.json and the compile_commands.json link
    profile     build-profile: the slowest files, a Chrome trace, a chart
    clean       removing a checkout's build dirs, venvs (and caches)
    backend     the PEP 517 backend (scikit-build-core plus target resolution)
"""


class DevkitError(Exception):
    """A failure with a one-line message that says what to do.

    The noxfile and the backend print the message alone, without a traceback.
    """
