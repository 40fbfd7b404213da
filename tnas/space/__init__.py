"""What can be chosen: `ArchConfig` (a point) and `DesignSpace` (the set). Imports no torch."""

from tnas.space.config import ArchConfig, ConfigError, LayerConfig, count_params

__all__ = ["ArchConfig", "ConfigError", "LayerConfig", "count_params"]
