"""ModelConfig: every setting that defines a MedVisionLlama network, validated on construction.

The defaults are chosen so the plain ViT is the paper's size: patch 8, E = 112, 2 encoder blocks
of 4 heads with MLP 4E, channel-attention reduction 8, decoder widths 56/28/14. For a 4-channel,
4-class input of 64×64×40 (8×8×5 = 320 tokens) that is 847,620 parameters (paper: 0.84 M) and
the ``mlp`` variant (d = 4E = 448) 949,428 (paper: 0.96 M); ``mvl params`` prints every variant.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from medvisionllama.errors import InputError
from medvisionllama.llm.registry import get_spec
from medvisionllama.vocabulary import ATTENTIONS, DEFAULT_ATTENTION, parse_model_name


@dataclasses.dataclass
class ModelConfig:
    """Settings of one network. Model names: ``vit``, ``mlp``, ``<llm>`` and its controls
    ``<llm>-random``, ``<llm>-shuffled`` (the grammar: :mod:`medvisionllama.vocabulary`).

    Attributes:
        model: which bridge: ``vit`` (none), ``mlp`` (GELU + LayerNorm), ``<llm>`` (a pretrained
            frozen layer of registry entry <llm>), ``<llm>-random`` (same layer, random weights),
            ``<llm>-shuffled`` (the pretrained tensors, values permuted).
        in_channels: image modalities C_in.
        num_classes: output classes (background included).
        img_size: (X, Y, Z) the position table is made for; each divisible by ``patch_size``.
        patch_size: P (cubic patches).
        hidden_size: E.
        num_layers: encoder blocks.
        num_heads: attention heads (E divisible by it).
        attention: ``hybrid-sequential`` | ``hybrid-parallel`` | ``hybrid-interleaved`` | ``spatial``.
        mlp_ratio: encoder MLP width / E.
        channel_reduction: r of the channel attention's MLP (E -> E/r -> E).
        bridge_hidden_size: d of the ``mlp`` variant (None: 4·E); LLM variants use the LLM's width.
        llm_layer: index of the LLM's decoder layer (None: the last; negative counts from the end).
        llm_weights: local checkpoint directory, ``.gguf`` file or hub id (None: the registry
            default: SmolLM2's packaged GGUF, the hub id for the others).
        dropout: dropout rate in the ViT (training only).
    """

    model: str = "vit"
    in_channels: int = 4
    num_classes: int = 4
    img_size: tuple[int, int, int] = (64, 64, 40)
    patch_size: int = 8
    hidden_size: int = 112
    num_layers: int = 2
    num_heads: int = 4
    attention: str = DEFAULT_ATTENTION
    mlp_ratio: float = 4.0
    channel_reduction: int = 8
    bridge_hidden_size: int | None = None
    llm_layer: int | None = None
    llm_weights: str | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        parse_model_name(self.model)  # InputError listing the known names
        self.img_size = tuple(self.img_size)  # type: ignore[assignment]  # lists from JSON/YAML
        for name in ("in_channels", "num_classes", "patch_size", "hidden_size", "num_layers", "num_heads", "channel_reduction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"model setting {name}={value!r} must be an integer >= 1")
        if len(self.img_size) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.img_size):
            raise InputError(f"model setting img_size={self.img_size!r} must be three integers >= 1")
        if any(s % self.patch_size for s in self.img_size):
            raise InputError(f"model setting img_size={self.img_size!r} is not divisible by patch_size={self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise InputError(f"model setting hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.attention not in ATTENTIONS:
            raise InputError(f"model setting attention={self.attention!r} is not one of {', '.join(ATTENTIONS)}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise InputError(f"model setting dropout={self.dropout!r} must be in [0, 1)")
        if not (isinstance(self.mlp_ratio, (int, float)) and self.mlp_ratio > 0):
            raise InputError(f"model setting mlp_ratio={self.mlp_ratio!r} must be > 0")
        if self.bridge_hidden_size is not None and (not isinstance(self.bridge_hidden_size, int) or self.bridge_hidden_size < 1):
            raise InputError(f"model setting bridge_hidden_size={self.bridge_hidden_size!r} must be an integer >= 1 or null")
        if self.llm_weights is not None and not isinstance(self.llm_weights, str):
            raise InputError(f"model setting llm_weights={self.llm_weights!r} must be a path, a hub id or null")
        name = parse_model_name(self.model)
        if self.llm_layer is not None:
            if isinstance(self.llm_layer, bool) or not isinstance(self.llm_layer, int):
                raise InputError(f"model setting llm_layer={self.llm_layer!r} must be an integer or null")
            if name.llm is not None:
                get_spec(name.llm).resolve_layer(self.llm_layer)
        if name.layer is not None:
            get_spec(name.llm).resolve_layer(name.layer)

    @property
    def block_layer(self) -> int | None:
        """The LLM decoder layer V_LLM is taken from: the model name's ``@<layer>`` (a layer sweep),
        else ``llm_layer`` (None: the LLM's default, the last layer)."""
        layer = parse_model_name(self.model).layer
        return self.llm_layer if layer is None else layer

    @property
    def bridge(self) -> str:
        """``none``, ``mlp`` or ``llm``."""
        return parse_model_name(self.model).bridge

    @property
    def llm_name(self) -> str | None:
        return parse_model_name(self.model).llm

    @property
    def pretrained(self) -> bool:
        """True for ``<llm>`` (pretrained block), False for its controls and the others."""
        return parse_model_name(self.model).pretrained

    @property
    def control(self) -> str | None:
        """``random`` or ``shuffled`` for the controls of an LLM block, else None."""
        return parse_model_name(self.model).control

    @property
    def mlp_dim(self) -> int:
        return max(int(round(self.hidden_size * self.mlp_ratio)), 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``img_size`` as a list)."""
        data = dataclasses.asdict(self)
        data["img_size"] = list(self.img_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an ``InputError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown model setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)
