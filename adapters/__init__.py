"""Adapters to the cosmology ecosystem (classy, pmwd, JaxPM, nbodykit, halotools); each imported lazily."""
