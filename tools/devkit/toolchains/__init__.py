"""devkit.toolchains: the toolchain and the plan: a session's options, targets and
torch, uv and venvs, compilers and GPU toolchains, the CPU ISAs, jobs, the compiler
cache and cluster, the build plan."""
