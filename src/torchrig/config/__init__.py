"""The settings layer's parts: value parsers, the table of settings, the project file (torchrig.toml)."""
