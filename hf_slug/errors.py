"""Typed errors. Each message names what is wrong and how to fix it.

Every error derives from `SLUGError` and from the closest built-in exception, so callers can catch
either `hf_slug.SLUGError` or, say, `ValueError`.
"""

from __future__ import annotations


class SLUGError(Exception):
    """Base class of every error hf_slug raises on purpose."""


class EmptyDatasetError(SLUGError, ValueError):
    """A forget or retain set holds no image–text pairs."""


class MissingCaptionError(SLUGError, ValueError):
    """An image has no caption (no `.txt` beside it, no metadata row, an empty string)."""


class UnknownLayerError(SLUGError, KeyError):
    """A named layer is not a candidate weight of the model."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnsupportedModelError(SLUGError, TypeError):
    """The model is not of a family hf_slug knows how to unlearn."""


class NonFiniteGradientError(SLUGError, FloatingPointError):
    """A gradient or delta holds NaN or inf values."""


class NonFiniteOutputError(NonFiniteGradientError):
    """The model's features hold NaN or inf values (e.g. an edit overflowed its dtype); a step
    search counts such a trial as not forgetting."""


class DeltaFormatError(SLUGError, ValueError):
    """A delta folder or config is missing, truncated, corrupt or inconsistent."""


class FingerprintMismatchError(SLUGError, ValueError):
    """A delta was computed on a different base tensor than the one it is being applied to."""


class AdapterError(SLUGError, ValueError):
    """An adapter name or adapter operation is invalid (unknown name, duplicate, merged state)."""


class HubError(SLUGError, ValueError):
    """A Hub repository or model card cannot be used as asked."""


class ConfigError(SLUGError, ValueError):
    """A config field (SLUGConfig, slug_config.json, stack index) has the wrong type or value."""


class DataFormatError(SLUGError, ValueError):
    """An image, caption file or metadata file cannot be read (corrupt, truncated, malformed)."""


class AdapterNameError(AdapterError):
    """An adapter name is not a safe folder name (empty, '.', '..', a separator, a bad char)."""


class UsageError(SLUGError, ValueError):
    """A command-line flag or path is wrong (the CLI exits with code 2)."""


class StackError(SLUGError, RuntimeError):
    """A stack of deltas does not meet its concepts' forget criteria (`unlearn_stack`)."""
