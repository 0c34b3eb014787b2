"""The pure injection core: pod dict + InjectorConfig in, new pod (and warnings) out. No I/O here."""

from webhook.injection.config import InjectorConfig, load_config, parse_config
from webhook.injection.errors import ConfigError, InjectionError, InvalidAnnotations
from webhook.injection.inject import NOTHING_ASKED, Result, carries_our_annotations, inject

__all__ = [
    "NOTHING_ASKED",
    "ConfigError",
    "InjectionError",
    "InjectorConfig",
    "InvalidAnnotations",
    "Result",
    "carries_our_annotations",
    "inject",
    "load_config",
    "parse_config",
]
