"""Beam ModelHandlers: one generic numpy handler over any runner, and its keyed form."""
