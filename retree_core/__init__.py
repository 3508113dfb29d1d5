"""ReTree: two-stage diffusion for retinal fundus images (vessel tree -> fundus photograph)."""

__version__ = "0.1.0"
