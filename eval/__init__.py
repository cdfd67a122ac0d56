"""eval package of clearbench."""
