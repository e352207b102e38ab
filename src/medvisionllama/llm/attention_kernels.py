"""Memory-efficient, non-causal, mask-free attention for the frozen decoder layer (V_LLM).

The frozen block sees every token of a volume at once: about 17,000 tokens for a 240×240×152
input at patch 8. Attention that materialises the (B, H, T, T) score matrix (transformers'
``eager`` path) needs ``B·H·T²`` floats for it, e.g. 4 × 16 × 17,000² × 4 bytes ≈ 74 GB for
Gemma-2-9B's layer in float32, before the backward pass keeps a copy. This module provides one
attention function, registered in transformers' attention interface as :data:`ATTENTION_NAME`,
whose memory is linear in T for the full-softmax families and O(chunk × T) for Gemma-2:

- **no soft-capping** (Llama-3.1, Mistral, Qwen2, Yi, SmolLM2): PyTorch's
  ``scaled_dot_product_attention`` with ``is_causal=False`` and no mask, so CUDA runs its flash
  or memory-efficient kernel (grouped key/value heads through ``enable_gqa``, no repeated copies);
- **logit soft-capping** (Gemma-2: ``softcap · tanh(QKᵀ·scale / softcap)``, which SDPA cannot
  express): :func:`chunked_softcap_attention`, which computes the scores, softmax and weighted
  values for ``chunk`` queries at a time against all T keys. Each chunk runs under activation
  checkpointing, so the backward pass recomputes one chunk's (B, H, chunk, T) scores at a time
  instead of keeping every chunk's: peak memory is O(B·H·chunk·T) forward and backward.

Both are exactly the computation of transformers' ``eager`` path without a mask (scores in the
input dtype, softmax upcast to float32 and cast back, dropout only while the module trains), so
results agree with ``eager``/``sdpa`` to rounding.

Deliberate choices (the paper removes the attention mask, Section 3.1):

- **never causal**: this function ignores ``is_causal`` and the module's ``is_causal`` attribute;
- **no mask**: a mask passed in is refused (the block never passes one);
- **no sliding window**: transformers realises Gemma-2's and Mistral's sliding windows only as a
  mask built by the full model, which the block does not build; the ``sliding_window`` argument
  the attention modules pass is ignored here, as transformers' own ``sdpa``/``eager`` functions
  ignore it. Every token therefore attends to every token on every layer, as the block did before
  this module existed. (The layer the paper takes, Gemma-2-9B's last, index 41 of 42, is a
  ``full_attention`` layer in the model's ``layer_types`` anyway; Mistral-7B's 4,096-token window
  would otherwise cut a 17,000-token volume into bands of a flattened 3D grid.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

#: the name under which :func:`noncausal_attention_forward` is registered with transformers
ATTENTION_NAME = "medvisionllama_noncausal"

#: default budget of one chunk's score matrix, in elements (B·H·chunk·T): 2**27 elements are
#: 512 MiB in float32 (the softmax's dtype), small beside an 8B-model layer's activations
CHUNK_ELEMENTS = 2**27


def query_chunk_size(batch: int, heads: int, tokens: int, budget: int | None = None) -> int:
    """Queries per chunk so that one chunk's (B, H, chunk, T) scores hold at most ``budget``
    elements (default: :data:`CHUNK_ELEMENTS`, read at call time), at least 1, at most ``tokens``."""
    budget = CHUNK_ELEMENTS if budget is None else budget
    if min(batch, heads, tokens, budget) < 1:
        raise ValueError(f"batch {batch}, heads {heads}, tokens {tokens}, budget {budget}: all must be >= 1")
    return max(1, min(tokens, budget // (batch * heads * tokens)))


def _softcap_chunk(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float, softcap: float,
    dropout: float, training: bool,
) -> torch.Tensor:
    """One chunk of queries against every key; grouped heads folded into the query rows.

    query (B, Hkv, R·Q, d), key/value (B, Hkv, T, d) -> (B, Hkv, R·Q, d).
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (B, Hkv, R·Q, T)
    scores = torch.tanh(scores / softcap) * softcap
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # (B, Hkv, R·Q, T)
    weights = F.dropout(weights, p=dropout, training=training)
    return torch.matmul(weights, value)  # (B, Hkv, R·Q, d)


def chunked_softcap_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    scaling: float,
    softcap: float,
    dropout: float = 0.0,
    training: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Non-causal attention with logit soft-capping, ``chunk_size`` queries at a time.

    Args:
        query: (B, H, T, d).
        key, value: (B, Hkv, T, d), with H a multiple of Hkv (grouped-query attention: query head
            h reads key/value head h // (H / Hkv), as transformers' ``repeat_kv``).
        scaling: multiplies QKᵀ before capping.
        softcap: the cap c in ``c · tanh(s / c)``.
        dropout: attention dropout probability, applied only when ``training``.
        chunk_size: queries per chunk (default: :func:`query_chunk_size`).

    Returns:
        (B, H, T, d). When gradients are needed, each chunk is checkpointed: its scores are
        recomputed in the backward pass rather than stored.
    """
    batch, heads, tokens, head_dim = query.shape
    kv_heads = key.shape[1]
    if heads % kv_heads or key.shape != value.shape or key.shape[0] != batch or key.shape[-1] != head_dim:
        raise ValueError(f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)} do not fit")
    groups = heads // kv_heads
    chunk = chunk_size or query_chunk_size(batch, heads, key.shape[2])
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk}")
    grouped = query.view(batch, kv_heads, groups, tokens, head_dim)  # (B, Hkv, R, T, d)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    outputs = []
    for start in range(0, tokens, chunk):
        part = grouped[:, :, :, start:start + chunk]  # (B, Hkv, R, Q, d)
        q_len = part.shape[3]
        rows = part.reshape(batch, kv_heads, groups * q_len, head_dim)  # (B, Hkv, R·Q, d)
        args = (rows, key, value, scaling, softcap, dropout, training)
        out = checkpoint(_softcap_chunk, *args, use_reentrant=False) if needs_grad else _softcap_chunk(*args)
        outputs.append(out.view(batch, kv_heads, groups, q_len, head_dim))  # (B, Hkv, R, Q, d)
    return torch.cat(outputs, dim=3).view(batch, heads, tokens, head_dim)  # (B, H, T, d)


def noncausal_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    query_chunk_size: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: (B, H, T, d) tensors in, (B, T, H, d) out.

    ``dropout`` is the probability transformers passes (already 0 unless the module trains).
    Other keyword arguments (``sliding_window``, ``is_causal``, ``position_ids``...) are ignored
    on purpose (see the module docstring).
    """
    if attention_mask is not None:
        raise ValueError(f"{ATTENTION_NAME} attention is mask-free; got a mask of shape {tuple(attention_mask.shape)}")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    training = bool(getattr(module, "training", False))
    dropout = float(dropout) if training else 0.0
    if softcap is None:
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=None, dropout_p=dropout, is_causal=False, scale=scaling,
            enable_gqa=key.shape[1] != query.shape[1],
        )  # (B, H, T, d)
    else:
        out = chunked_softcap_attention(
            query, key, value, scaling=scaling, softcap=float(softcap), dropout=dropout, training=training,
            chunk_size=query_chunk_size,
        )  # (B, H, T, d)
    return out.transpose(1, 2).contiguous(), None  # (B, T, H, d)


def register_attention() -> str:
    """Register :func:`noncausal_attention_forward` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, noncausal_attention_forward)
    return ATTENTION_NAME
