"""devkit.foundation: what every other module stands on: running commands, logging,
git, files and locations, locks, the env-var registry, the layout of paths, this
machine's CPU."""
