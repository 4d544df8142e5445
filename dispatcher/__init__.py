"""The domain: categories, geography, responders, nearest-responder ranking and the lifecycle.

Nothing in this package performs I/O except `dispatcher.store` and `dispatcher.service`'s
adapters; the rest are pure modules that are unit- and property-tested by feeding them.
"""
