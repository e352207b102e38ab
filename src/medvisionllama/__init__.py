"""MedVisionLlama: a 3D ViT segmenter with one frozen LLM transformer block, and the pipeline
that reproduces the paper (Kumar et al., arXiv 2410.02458) from the Medical Segmentation
Decathlon."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medvisionllama")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from medvisionllama.errors import InputError

__all__ = ["InputError", "__version__"]
