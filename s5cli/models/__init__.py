"""Pure torch video models (no I/O): S4 layer, ViS4mer decoder, S5, LSMCL, video transformer, registry."""
