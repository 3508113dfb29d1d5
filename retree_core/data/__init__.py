"""Data for ReTree: reading files, dataset layouts, joint augmentation, tensors, the embedded example."""
from .augment import AugmentConfig, augment
from .dataset import MixedDataset, PairDataset, ProceduralTrees, make_dataset, split_sample_list
from .embedded import embedded_example, estimate_fov, segment_vessels_classical
from .imageio import DataError, binarize_mask, mask_at, prepare_mask, read_mask, read_rgb
from .layouts import (
    DEFAULT_VAL,
    Sample,
    check_samples,
    find_samples,
    find_samples_many,
    is_validation,
    split_samples,
    style_of,
)

__all__ = [
    "AugmentConfig", "augment", "MixedDataset", "PairDataset", "ProceduralTrees", "make_dataset", "split_sample_list", "embedded_example", "estimate_fov",
    "segment_vessels_classical", "DataError", "binarize_mask", "mask_at", "prepare_mask", "read_mask", "read_rgb",
    "DEFAULT_VAL", "Sample", "check_samples", "find_samples", "find_samples_many", "is_validation",
    "split_samples", "style_of",
]
