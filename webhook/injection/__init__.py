"""The pure injection core: pod dict + InjectorConfig in, new pod (and warnings) out. No I/O here."""

from webhook.injection.config import InjectorConfig, load_config, parse_config
from webhook.injection.errors import ConfigError, InjectionError, InvalidAnnotations
from webhook.injection.inject import NOTHING_ASKED, Result, inject, skip_reason

__all__ = [
    "NOTHING_ASKED",
    "ConfigError",
    "InjectionError",
    "InjectorConfig",
    "InvalidAnnotations",
    "Result",
    "inject",
    "load_config",
    "parse_config",
    "skip_reason",
]
