"""devkit.artifacts: binaries: what a build is made from (its key), the local store,
the wheel index, and checking and staging a prebuilt wheel."""
