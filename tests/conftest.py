import jax

# Reference comparisons against scipy are made in float64; float32 tests ask for it explicitly.
jax.config.update("jax_enable_x64", True)
