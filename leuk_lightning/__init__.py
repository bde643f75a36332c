"""leuk-lightning: reproducible deep-learning experiments for ALL detection."""

from leuk_lightning.utils.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()
