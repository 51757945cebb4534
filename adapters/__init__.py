"""Adapters to the cosmology ecosystem (classy, pmwd, JaxPM, JAX, nbodykit, halotools); each imported lazily."""
# classy: emu_backend.adapters.classy.ClassPower (linear P(k, z), growth, transfer from CLASS; extra 'class', imported lazily)
# jaxpm: emu_backend.adapters.jaxpm.JaxPMBackend (simulator backend "jaxpm": PM N-body with JaxPM; extra 'jaxpm'; get_backend imports it lazily, jax imported only on use)
# jax: emu_backend.adapters.jax.jax_forward_model / jax_emulator (the differentiable forward model and emulator as JAX
#   functions: custom_vjp over pure_callback into torch, bridge in .jax_bridge; extra 'jax', jax imported only on use)
# pmwd: emu_backend.adapters.pmwd.PmwdBackend (simulator backend "pmwd"; get_backend imports it lazily) and emulator_nbody
#   (drop-in for pmwd.nbody); conversions of Configuration/Cosmology in .pmwd_convert, of modes/Particles in .pmwd_fields;
#   extra 'pmwd' (git install); jax/pmwd imported only on use, pmwd's global x64 switch restored (pmwd_x64() scopes it)
# halotools: emu_backend.adapters.halotools.to_halotools / halo_catalog_from_snapshot (FoF halos as UserSuppliedHaloCatalog
#   for HOD mocks); extra 'halotools', imported only on use
# nbodykit: emu_backend.adapters.nbodykit.catalog_from_snapshot / emulated_catalog (an nbodykit CatalogSource with
#   Position, Velocity, VelocityOffset, InitialPosition, ID); extra 'nbodykit', imported only on use
