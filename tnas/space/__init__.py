"""What can be chosen: `ArchConfig` (a point) and `DesignSpace` (the set). Imports no torch."""

from tnas.space.config import ArchConfig, ConfigError, LayerConfig, count_params
from tnas.space.space import PRESETS, DesignSpace, load_space, preset_names
from tnas.space.yamlio import SpaceError

__all__ = [
    "PRESETS",
    "ArchConfig",
    "ConfigError",
    "DesignSpace",
    "LayerConfig",
    "SpaceError",
    "count_params",
    "load_space",
    "preset_names",
]
