"""A general plugin that fails to import: vllm must report it and go on."""

raise ImportError("vllm_plugin_example.broken is broken on purpose")
