"""MedVisionLlama: a 3D ViT segmenter with one frozen LLM transformer block, and the pipeline
that reproduces the paper (Kumar et al., arXiv 2410.02458) from the Medical Segmentation
Decathlon."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medvisionllama")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from medvisionllama.errors import InputError

#: the Python API (:mod:`medvisionllama.api`), imported on first use: ``import medvisionllama``
#: stays light (Snakemake and the command line import the package without torch)
_API = ("Run", "build_model", "load_run", "read_metrics")
__all__ = ["InputError", "__version__", *_API, "register_llm"]


def __getattr__(name: str):
    if name in _API:
        from medvisionllama import api

        return getattr(api, name)
    if name == "register_llm":  # an LLM from a local Hugging Face folder, by a name of yours
        from medvisionllama.llm.registry import register_folder

        return register_folder
    raise AttributeError(f"module 'medvisionllama' has no attribute {name!r}")
