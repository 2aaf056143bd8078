"""Model execution: the layers models are built from."""
