"""Adapters to the cosmology ecosystem (classy, pmwd, JaxPM, nbodykit, halotools); each imported lazily."""
# classy: emu_backend.adapters.classy.ClassPower (linear P(k, z), growth, transfer from CLASS; extra 'class', imported lazily)
