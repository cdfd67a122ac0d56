"""data_gen package of clearbench."""
