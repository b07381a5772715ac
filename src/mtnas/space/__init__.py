"""Search spaces and their genotypes (Arch): sample / mutate / crossover / encode, YAML round trip."""

from mtnas.space.vit import ViTArch, ViTSpace

__all__ = ["ViTArch", "ViTSpace"]
