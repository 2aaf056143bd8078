"""devkit.checks: CI: which sessions a change needs and running them, the workflows,
the test tiers."""
