"""Controls for V_LLM: blocks with the pretrained layer's architecture but not its learned arrangement.

Why a scale-matched control (issue 10, item 3). The ``<llm>-random`` control draws every matrix
from normal(0, 0.02) and sets the RMSNorm weights to one. For unit-variance input that block is
almost the identity: the relative update ‖block(x) − x‖ / ‖x‖ is about 0.1, against about 11 for the
pretrained SmolLM2-135M layer (layer 29, the project's default), so "pretrained vs random" mixes
pretrained knowledge with a ~100× difference in output scale. DESIGN.md asks that "a control must
match the pretrained block's output scale".

The control here keeps each weight tensor's VALUES and destroys their ARRANGEMENT: the entries of
every tensor are permuted (over all its elements, not per row) with a permutation drawn from a
``torch.Generator`` seeded from ``(seed, tensor name)``. Each tensor therefore keeps its exact
multiset of values, hence its mean, standard deviation, norm, extreme values and (for the
quantised GGUF layers) its quantisation grid, while the structure learned in pre-training (which
input feeds which unit, attention heads, the pairing of gate and up projections) is gone. What is
left to tell apart from the pretrained block is the arrangement alone; its output scale stays
within a factor of 2 of the pretrained block's (tested in ``tests/test_llm_controls.py``).

1-D tensors (RMSNorm weights, Qwen-2's attention biases) are permuted too. Permuting them is
harmless (the values stay the same, so the per-tensor statistics and the block's overall gain are
kept) and consistent (the per-channel gains are part of the learned arrangement: which channel is
amplified). A tensor whose entries are all equal is returned as a copy, unchanged.

Determinism: a tensor's permutation depends only on ``seed``, its name and its number of elements
(``torch.randperm`` on a CPU generator, whose Mersenne-Twister stream is the same on every
platform), not on the order of the state dict or on other tensors, so a checkpoint can rebuild
the control from its name and seed. ``tests/test_llm_controls.py`` pins the permutation of a known
tensor, so a PyTorch release that changed ``randperm`` would be caught, not silently followed.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import torch

#: name of the control in the model-name grammar (``<llm>-shuffled``), once wired into llm.factory
SHUFFLED_SUFFIX = "-shuffled"


def tensor_seed(seed: int, name: str) -> int:
    """The generator seed of tensor ``name``: CRC-32 of ``"{seed}:{name}"`` (stable across runs,
    Python hash seeds and platforms)."""
    return zlib.crc32(f"{int(seed)}:{name}".encode())


def _permutation(numel: int, generator: torch.Generator, values: torch.Tensor) -> torch.Tensor:
    """A permutation of ``range(numel)`` that moves at least one value of ``values`` (flat, CPU)
    when it has two distinct values; redrawn from the same generator otherwise (deterministic)."""
    perm = torch.randperm(numel, generator=generator)
    distinct = numel > 1 and bool((values != values[0]).any())
    while distinct and torch.equal(values[perm], values):
        perm = torch.randperm(numel, generator=generator)
    return perm


def shuffle_layer_state_dict(state_dict: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The scale-matched control's weights: every tensor of ``state_dict`` with its entries permuted.

    Args:
        state_dict: one decoder layer's tensors, name (e.g. ``self_attn.q_proj.weight``) -> tensor
            of any shape, dtype and (non-meta) device. Not modified.
        seed: the control's seed; each tensor draws its permutation from a CPU generator seeded
            with :func:`tensor_seed` ``(seed, name)``.

    Returns:
        A new dict with the same keys, and for each a new tensor of the same shape, dtype and
        device holding the same multiset of values (so the same mean, std and norm) in a different
        arrangement (for every tensor with at least two distinct values).
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"state_dict[{name!r}] is a {type(tensor).__name__}, not a tensor")
        if tensor.is_meta:
            raise ValueError(f"state_dict[{name!r}] is on the meta device: it has no values to permute")
        flat = tensor.detach().reshape(-1)  # (numel,)
        generator = torch.Generator(device="cpu").manual_seed(tensor_seed(seed, name))
        perm = _permutation(flat.numel(), generator, flat.cpu())
        out[name] = flat[perm.to(flat.device)].reshape(tensor.shape).clone()  # same shape, new storage
    return out
