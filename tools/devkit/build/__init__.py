"""devkit.build: the build: the PEP 517 backend and what it hands CMake, the steps of a
build session, following it, its smoke check, and the dev-precompiled path."""
