"""devkit: the developer workflow behind noxfile.py and the build backend.

Standard library only, so that nox's own environment and the project venv (via
the PEP 517 backend in build/backend.py) can both import it. One module per concern,
in a folder per layer, from the floor up; a module imports only its own layer
and those below it (tests/devkit/test_layers.py):

  foundation/   what every other module stands on
    log         what devkit says: one prefix, [vllm]
    procs       running commands: run (a process group), check (echo, one failure
                line), probe (a quick question); signals as one line
    gitbase     git, called one way; the one merge-base rule
    files       atomic writes, sha256, a path as a person reads it
    locations   reading a local path or an http(s)/file URL
    lock        one session per venv and per build directory (flock)
    envs        the env-var registry (vllm/envs.py), loaded from the source tree
    layout      every path devkit makes: build root and dirs, venvs, caches, marks
    machine     this machine's CPU flags
  toolchains/   the toolchain and the plan
    options     each session's options (argparse): the request a plan is made for
    targets     the table of build targets: torch pin, index, per-job memory; this
                machine's target
    sources     where torch comes from: the target's index, the user's pip mirrors
    uv          finding uv, its environment and errors, what a venv lacks
    venv        a session's venv: checked before use, made under a temporary name
    toolchain   tools on PATH, what a built library links in
    cuda, rocm  GPU toolchains and archs
    cpuisa      the CPU kernels' ISAs (cmake/cpu_isa.json, shared with CMake)
    optable     the op table (vllm/_op_table.py) and the C++/CMake/docs views of it
    resources   how many compile jobs, and why
    compiler_cache  which compiler cache, configured (ccache, or sccache with a store)
    cache_server    sccache's server: started, its store checked and watched, stats
    dist        the sccache-dist compile cluster
    plan        the build plan: one resolve of all of the above, for every build
  artifacts/    binaries
    binkey, binstore, binaries   what a build is made from, the local store, lookups
    wheelindex  the static index of prebuilt wheels: locate, publish
    wheelcheck  whether a prebuilt wheel's binaries run here; csrc/ drift
    precompiled fetch, check and stage a prebuilt wheel's binaries
  build/        the build
    backend     the PEP 517 backend (scikit-build-core, told the plan)
    cmakecache, presets, metadata   what the backend hands CMake and the wheel
    pipeline    the steps of a build session, and its summary line
    progress    live progress of a build, followed from its build dir
    smoke       the build's last step: the extension imports, every op registered
    abi_audit   the extension stays on torch's stable ABI (torch-abi-audit)
    nvcc_relative   nvcc's launcher under sccache (relative paths in its listings)
    prebuilt    the dev-precompiled path (a venv on prebuilt binaries)
  checks/       CI
    ci, ci_run  which sessions a change needs; running them
    workflows, tiers   the GitHub workflows' sessions; the test tiers
  commands/     the commands on top
    doctor, clean, profile, bench, verdict, crossversion, farm, docgen
"""


class DevkitError(Exception):
    """A failure with a one-line message that says what to do.

    The noxfile and the backend print the message alone, without a traceback.
    """
