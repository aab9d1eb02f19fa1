"""Legacy -> EFP Connect mappings: the default mapping as data and the pure normalisation functions."""
