"""multidigit: a detector for handwritten digits on a canvas; importing it first quiets TensorFlow."""

from multidigit import quiet  # noqa: F401  before anything here imports TensorFlow
