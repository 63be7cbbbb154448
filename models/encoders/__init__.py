"""Image and text encoders for the CLIP models, built from local weights only (no hub downloads)."""

from models.encoders.image import ImageEncoder, ImageEncoderConfig
from models.encoders.text import TextEncoder, TextEncoderConfig

__all__ = ["ImageEncoder", "ImageEncoderConfig", "TextEncoder", "TextEncoderConfig"]
