"""The shared config schema lives in the package (`mdm_jax.config_schema`)."""
from mdm_jax.config_schema import *  # noqa: F401,F403
from mdm_jax.config_schema import ml_collections  # noqa: F401
