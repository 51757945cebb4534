"""Adapters to the cosmology ecosystem (classy, pmwd, JaxPM, nbodykit, halotools); each imported lazily."""
# classy: emu_backend.adapters.classy.ClassPower (linear P(k, z), growth, transfer from CLASS; extra 'class', imported lazily)
# jaxpm: emu_backend.adapters.jaxpm.JaxPMBackend (simulator backend "jaxpm": PM N-body with JaxPM; extra 'jaxpm'; get_backend imports it lazily, jax imported only on use)
