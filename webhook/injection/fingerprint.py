"""One short, stable name for the injector config in force: `podpatterns_config_info{fingerprint}` on
/metrics, the reload log line, and anything else (an audit reading the chart's ConfigMap) that must say
"these replicas run the same config" or "this ConfigMap is what they run".

What is hashed is the *validated* config (`InjectorConfig`), not the file text: comments, whitespace,
key order, quoting style, `{}` against an absent key, and a default spelled out against one left implicit
all give the same config, so they must give the same fingerprint; anything that changes what a pod gets
(any field, a template, a built-in exporter preset merged under the config's own `exporters`) changes it.
The model is dumped as JSON by its YAML names (aliases) and serialized canonically: sorted keys, no
whitespace, ASCII only, no NaN. That text depends on neither the process (no hash seeds, no dict order)
nor the Python version, so the same config gives the same fingerprint wherever it is computed. It
names the *effective* config, defaults included: a podpatterns version whose defaults differ gives a
different fingerprint for the same file, as it injects differently.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # config.py imports this module to cache the fingerprint on the config object
    from webhook.injection.config import InjectorConfig

FINGERPRINT_HEX_DIGITS = 16  # 64 bits: a name for humans and label values, not a security boundary


def canonical_json(data: Any) -> bytes:
    """JSON text that is the same for equal data in any process and Python version."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def config_fingerprint(config: InjectorConfig) -> str:
    """The first 16 hex digits of the SHA-256 of the config's canonical JSON, computed once per config
    object (`InjectorConfig.fingerprint` caches it: configs are frozen, and inject() records it per pod)."""
    return config.fingerprint


def compute_fingerprint(config: InjectorConfig) -> str:
    """The uncached computation behind `InjectorConfig.fingerprint`."""
    data = config.model_dump(mode="json", by_alias=True)
    return hashlib.sha256(canonical_json(data)).hexdigest()[:FINGERPRINT_HEX_DIGITS]
