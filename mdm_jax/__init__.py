"""mdm_jax: masked diffusion models with adaptive-order inference in JAX/Flax."""

__version__ = "0.1.0"
