"""The MedVisionLlama network: a 3D ViT segmenter with an optional frozen LLM layer (or MLP) bridge."""

from medvisionllama.models.attention import (
    ATTENTION_STRATEGIES,
    ChannelAttentionBlock,
    EfficientAttentionBlock,
    EncoderBlock,
    SpatialAttentionBlock,
)
from medvisionllama.models.blocks import MLPBlock, MultiScaleFusionBlock, PatchEmbeddingBlock
from medvisionllama.models.bridge import BridgeBlock
from medvisionllama.models.config import ModelConfig
from medvisionllama.models.decoder import DecoderBlock, UpsampleStageBlock
from medvisionllama.models.medvisionllama import MedVisionLlama, build_model

__all__ = [
    "ATTENTION_STRATEGIES",
    "BridgeBlock",
    "ChannelAttentionBlock",
    "DecoderBlock",
    "EfficientAttentionBlock",
    "EncoderBlock",
    "MLPBlock",
    "MedVisionLlama",
    "ModelConfig",
    "MultiScaleFusionBlock",
    "PatchEmbeddingBlock",
    "SpatialAttentionBlock",
    "UpsampleStageBlock",
    "build_model",
]
