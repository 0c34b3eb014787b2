"""Re-exports the config fingerprint, which lives in the core (webhook/injection/fingerprint.py) so the
status annotation can record it without the core importing an edge."""

from webhook.injection.fingerprint import FINGERPRINT_HEX_DIGITS, canonical_json, config_fingerprint

__all__ = ["FINGERPRINT_HEX_DIGITS", "canonical_json", "config_fingerprint"]
