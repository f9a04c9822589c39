"""Image sources: bundled photos, folders, Fashion-MNIST."""

from generator.data.dataset import Dataset, ImageItem  # noqa: F401
from generator.data.sources import DATASET_SOURCES, load_dataset  # noqa: F401
