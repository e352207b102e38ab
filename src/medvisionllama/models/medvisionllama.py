"""MedVisionLlama: the 3D ViT segmenter with an optional bridge (MedVisionLlama, Figure 1, Eq. 2).

    x (B, C_in, X, Y, Z)
    -> PatchEmbeddingBlock -> MultiScaleFusionBlock -> EncoderBlock × num_layers -> LayerNorm   V_E
    -> [BridgeBlock: V_L1 -> V_LLM (frozen) or GELU+LayerNorm -> (+ residual) -> V_L2]       V_LLM
    -> DecoderBlock                                                                            V_D
    -> logits (B, num_classes, X, Y, Z)

Checkpoints keep only what training changes (:meth:`MedVisionLlama.trainable_state_dict`); the
frozen LLM layer (hundreds of MB) is rebuilt from its source by :func:`build_model`.
"""

from __future__ import annotations

import torch
from torch import nn

from medvisionllama.errors import InputError
from medvisionllama.llm.block import FrozenLLMBlock
from medvisionllama.llm.factory import build_frozen_block, default_dtype
from medvisionllama.models.attention import EncoderBlock
from medvisionllama.models.blocks import MultiScaleFusionBlock, PatchEmbeddingBlock, tokens_to_grid
from medvisionllama.models.bridge import BridgeBlock, llm_bridge, mlp_mixer
from medvisionllama.models.config import ModelConfig
from medvisionllama.models.decoder import DecoderBlock


class MedVisionLlama(nn.Module):
    """The segmenter. Build it with :func:`build_model` (which loads the frozen block's weights).

    Args:
        config: the network's settings.
        llm_block: V_LLM for ``<llm>`` models (required then, refused otherwise).
    """

    def __init__(self, config: ModelConfig, llm_block: FrozenLLMBlock | None = None) -> None:
        super().__init__()
        self.config = config
        bridge = config.bridge
        if (bridge == "llm") != (llm_block is not None):
            raise ValueError(f"model {config.model!r} {'needs' if bridge == 'llm' else 'takes no'} llm_block")
        E = config.hidden_size
        self.embed = PatchEmbeddingBlock(config.in_channels, E, config.img_size, config.patch_size, config.dropout)
        self.fusion = MultiScaleFusionBlock(E)
        self.blocks = nn.ModuleList(
            EncoderBlock(E, config.num_heads, config.mlp_dim, config.attention, config.channel_reduction, config.dropout)
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(E)
        self.bridge: BridgeBlock | None = None
        if bridge == "mlp":
            size = config.bridge_hidden_size or 4 * E
            self.bridge = BridgeBlock(E, mlp_mixer(size), size)
        elif bridge == "llm":
            self.bridge = llm_bridge(E, llm_block)
        self.decoder = DecoderBlock(E, config.patch_size, config.num_classes)

    @property
    def frozen_block(self) -> FrozenLLMBlock | None:
        """V_LLM, or None for ``vit`` and ``mlp``."""
        mixer = self.bridge.mixer if self.bridge is not None else None
        return mixer if isinstance(mixer, FrozenLLMBlock) else None

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, C_in, X, Y, Z) -> logits (B, num_classes, X, Y, Z); X, Y, Z divisible by P.

        With ``return_features``: ``(logits, features)``, features for the activation maps of the
        paper's Figure 4, all as volumes: ``V_E`` encoder output (B, E, GX, GY, GZ), ``V_LLM`` the
        bridge's mixer output incl. residual (B, d, GX, GY, GZ; absent for ``vit``), ``V_D`` the
        decoder's last features (B, ch, X, Y, Z).
        """
        if x.dim() != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input (B, {self.config.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        tokens, grid = self.embed(x)  # (B, T, E)
        tokens = self.fusion(tokens, grid)  # (B, T, E)
        for block in self.blocks:
            tokens = block(tokens)  # (B, T, E)
        tokens = self.norm(tokens)
        features = {"V_E": tokens_to_grid(tokens, grid)}  # (B, E, GX, GY, GZ)
        if self.bridge is not None:
            tokens, mixed = self.bridge(tokens)  # (B, T, E), (B, T, d)
            features["V_LLM"] = tokens_to_grid(mixed, grid)  # (B, d, GX, GY, GZ)
        logits, decoded = self.decoder(tokens_to_grid(tokens, grid))  # (B, C, X, Y, Z), (B, ch, X, Y, Z)
        features["V_D"] = decoded
        return (logits, features) if return_features else logits

    def _frozen_prefixes(self) -> tuple[str, ...]:
        return ("bridge.mixer.",) if self.frozen_block is not None else ()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without the frozen LLM layer (trainable parameters and buffers)."""
        prefixes = self._frozen_prefixes()
        return {k: v for k, v in self.state_dict().items() if not k.startswith(prefixes)}

    @torch.no_grad()
    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load :meth:`trainable_state_dict` output: exactly its keys and shapes, else ``InputError``
        naming the offending keys. The frozen block is left as built."""
        own = {k: v for k, v in self.state_dict(keep_vars=True).items() if not k.startswith(self._frozen_prefixes())}
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise InputError(
                f"checkpoint does not fit model {self.config.model!r}: "
                f"missing keys: {', '.join(missing) or 'none'}; unexpected keys: {', '.join(unexpected) or 'none'}"
            )
        for key, target in own.items():
            if tuple(state_dict[key].shape) != tuple(target.shape):
                raise InputError(
                    f"checkpoint weight {key!r} has shape {tuple(state_dict[key].shape)}, model expects {tuple(target.shape)}"
                )
        for key, target in own.items():
            target.copy_(state_dict[key])

    def parameter_counts(self) -> tuple[int, int]:
        """(total, trainable) parameter counts; works on the ``meta`` device."""
        params = list(self.parameters())
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def build_model(
    config: ModelConfig,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    load_weights: bool = True,
    llm_dtype: torch.dtype | None = None,
) -> MedVisionLlama:
    """Build the network of ``config`` on ``device`` (default CPU).

    Args:
        config: the settings.
        device: where to put it; ``meta`` allocates nothing (for parameter counts).
        dtype: dtype of the trainable parts (default float32; use autocast for mixed precision).
        load_weights: read the frozen LLM layer's weights from its source (for the pretrained block
            and the ``-shuffled`` control); False gives the deterministic Gaussian weights of the
            ``-random`` control instead (fast tests, parameter counts).
        llm_dtype: dtype of the frozen layer (default bf16 on CUDA, float32 elsewhere).
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    device = torch.device(device or "cpu")
    block = None
    if config.bridge == "llm":
        block = build_frozen_block(
            config.llm_name,
            control=config.control,
            layer=config.block_layer,
            weights=config.llm_weights,
            device=device,
            dtype=llm_dtype or default_dtype(device),
            load_weights=load_weights,
        )
    with torch.device("meta" if device.type == "meta" else "cpu"):
        model = MedVisionLlama(config, block)
    trainable_dtype = dtype or torch.float32
    for name, module in model.named_children():
        if name != "bridge":
            module.to(device=device, dtype=trainable_dtype)
    if model.bridge is not None:
        model.bridge.l1.to(device=device, dtype=trainable_dtype)
        model.bridge.l2.to(device=device, dtype=trainable_dtype)
        if block is None:
            model.bridge.mixer.to(device=device, dtype=trainable_dtype)
    return model
