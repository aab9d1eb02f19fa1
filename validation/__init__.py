"""Validation rules declared as data and evaluated with Great Expectations."""
