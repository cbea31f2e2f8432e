"""Necks: feature fusion between a backbone and a head."""

from .hybrid_encoder import ChannelMapper, CSPRepLayer, HybridEncoder, RepVGGBlock, TransformerEncoderLayer

__all__ = ["HybridEncoder", "CSPRepLayer", "RepVGGBlock", "ChannelMapper", "TransformerEncoderLayer"]
