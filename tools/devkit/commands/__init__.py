"""devkit.commands: the commands on top: doctor, clean, profile, bench, the
cross-version tests, the compile farm, the generated docs."""
