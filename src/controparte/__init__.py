"""controparte: installation ID resolution service.

Layers (dependencies point inward): model <- store <- service <- (dns, cli).
"""

__version__ = "0.1.0"
