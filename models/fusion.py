"""Image-text fusion head for MAM-CLIP's auxiliary masked language modelling.

MAM-CLIP adds 0.5 x MLM to InfoNCE: masked report tokens are predicted from the text encoder's
hidden states after they cross-attend to image tokens, so the text side has to use the image. This
is that small fusion module (transformer decoder layers + vocabulary head); pair it with
:func:`models.losses.mask_tokens` and :func:`models.losses.mlm_loss`.
"""

from __future__ import annotations

from torch import Tensor, nn


class FusionMLMHead(nn.Module):
    """Text tokens self-attend, cross-attend to projected image tokens, then predict the vocabulary.

    Args:
        text_dim: hidden size of the text encoder's token states (the fusion width).
        image_dim: channel size of the image tokens.
        vocab_size: size of the text tokenizer's vocabulary.
        layers: number of decoder layers.
        heads: attention heads (must divide ``text_dim``).
        dropout: dropout inside the decoder layers.
    """

    def __init__(
        self,
        text_dim: int,
        image_dim: int,
        vocab_size: int,
        layers: int = 1,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.image_proj = nn.Linear(image_dim, text_dim)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(
                text_dim, heads, dim_feedforward=4 * text_dim, dropout=dropout, batch_first=True
            )
            for _ in range(layers)
        )
        self.head = nn.Sequential(
            nn.Linear(text_dim, text_dim), nn.GELU(), nn.LayerNorm(text_dim),
            nn.Linear(text_dim, vocab_size),
        )

    def forward(self, text_hidden: Tensor, text_mask: Tensor, image_tokens: Tensor) -> Tensor:
        """Vocabulary logits ``(B, L, vocab_size)``.

        Args:
            text_hidden: ``(B, L, text_dim)`` text encoder token states (of the masked input).
            text_mask: ``(B, L)``, nonzero/True at real tokens; padding is never attended to.
            image_tokens: ``(B, N, image_dim)`` image tokens (e.g. a flattened feature map), or
                ``(B, image_dim)`` for a single pooled embedding.
        """
        if image_tokens.ndim == 2:
            image_tokens = image_tokens[:, None]
        memory = self.image_proj(image_tokens)
        padding = ~text_mask.bool()
        hidden = text_hidden
        for layer in self.layers:
            hidden = layer(hidden, memory, tgt_key_padding_mask=padding)
        return self.head(hidden)
