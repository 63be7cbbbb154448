"""One FActOR study: model, splits, cached features, the channel mapper, every method's heatmaps.

:class:`FactorStudy` runs the stages of :class:`~mammo_interp.factor.FactorConfig` (the command
``python -m mammo_interp.factor`` and every per-layer analysis build one): it extracts and caches
feature maps, finds the shipped mapper or trains one (and ships it with ``--ship-to``), makes the
heatmaps of any registered method (:mod:`mammo_interp.methods`) from cached features or from images,
times box prediction and writes the localization table, figure and summary.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

import models  # noqa: F401 - runtime guard before torchvision/transformers
from mammo_interp import heatmaps as hm
from mammo_interp.channel_analysis import channel_diagnostics, oracle_channel, plot_channel_diagnostics
from mammo_interp.features import (FeatureSet, cached_features, digest, extract_features, file_fingerprint,
                                   table_fingerprint)
from mammo_interp.localization import (
    evaluate_methods,
    localize,
    overlay_figure,
    predictions_frame,
    write_localization_table,
)
from mammo_interp import methods as registry
from mammo_interp.mapper import ChannelMapper, MapperConfig, train_mapper
from mammo_interp.methods import Method, MethodContext
from mammo_interp.methods.channels import FACTOR
from mammo_interp.plotting import view_label
from models.cards import embedded_data, provenance, sha256
from models.checkpoints import clip_from_checkpoint
from models.clip import attribute_embedding
from models.data.datasets import ImageDataset
from models.data import default
from models.data.default import cache_dir, uses_embedded
from models.data.errors import DataError
from models.data.sources import SPLITS, TEST, TRAIN, VALIDATION, Splits, load_splits, preprocess_cache
from models.data.synth import GENERATOR_VERSION
from models.device import Precision, resolve_device
from models.default_model import open_checkpoint
from models.io import atomic_write, save_json, save_torch
from models.reference import load_reference, shipped_reference, shipped_reference_card
from models.text import attribute_sentences, finding_index

from mammo_interp.box_timing import HeatmapFunction, channel_method, time_box_prediction

if TYPE_CHECKING:
    from mammo_interp.factor import FactorConfig

MAPPER_DIR = Path(__file__).parent / "weights"  # the shipped mappers (package data)
MAPPER_CARD = "factor_mappers.json"


class FactorStudy:
    """The stages of one :class:`FactorConfig`, sharing the model, splits and cached features."""

    def __init__(self, config: FactorConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.precision = Precision.resolve(config.precision, self.device)
        self.category, self.category_index = finding_index(config.attribute)
        # a user's data is read (and any problem reported) before a model loads; only the embedded
        # set waits, since a shipped mapper decides which of its splits are needed
        user_splits = None if uses_embedded(config.data) else self._load_splits(SPLITS)
        self.checkpoint, payload, self.image_size = open_checkpoint(config.checkpoint, config.data,
                                                                    config.image_size, config.progress,
                                                                    config.device, config.precision, config.workers)
        self.model = clip_from_checkpoint(payload, str(self.checkpoint), config.text_encoder).eval()
        self.encoder = self.model.image_encoder
        self.layer = config.layer or self.encoder.config.feature_layer
        self.encoder.feature_channels(self.layer)  # validates the layer name
        self.text_embedding = attribute_embedding(self.model, config.attribute)  # on the CPU, with the mapper
        self.model.to(self.device)
        self.out = Path(config.out) / f"{self.slug}_{self.layer.replace('.', '')}"
        self.packaged = None if config.ship_to else self._packaged_mapper()
        self.needed = (VALIDATION, TEST) if self.packaged is not None else SPLITS
        self.splits: Splits = user_splits or self._load_splits(self.needed)
        reference = config.reference or shipped_reference_for(self.category, self.image_size, config.data)
        self.reference = self._load_reference(reference) if reference else None
        self._features: dict[str, FeatureSet] = {}
        self.seconds: dict[str, float] = {}  # wall time per step, for the run summary

    def _load_splits(self, needed: tuple[str, ...]) -> Splits:
        config = self.config
        return load_splits(config.data, config.validation_fraction, config.seed, config.progress, config.reading,
                           needed=needed)

    def _load_reference(self, path: str | Path):
        """The supervised reference and its config, checked against this study before any work."""
        reference, trained = load_reference(path)
        reference.to(self.device)
        if self.category not in trained.findings:
            raise DataError(path, f"the reference predicts {list(trained.findings)}",
                            f"a reference trained on {self.category!r}")
        if tuple(trained.image_size) != tuple(self.image_size):
            raise DataError(path, f"the reference was trained at {list(trained.image_size)}",
                            f"the study's input size {list(self.image_size)}")
        return reference, trained

    def _embedded_mapper_inputs(self) -> dict[str, Any]:
        """What a shipped mapper must match: the same inputs as :meth:`_mapper_key`, with the
        embedded set named by its generator config instead of its (machine-specific) tables."""
        return {"checkpoint_sha256": self.checkpoint_sha256, "text_encoder": self.config.text_encoder,
                       "layer": self.layer, "image_size": list(self.image_size),
                       "mapper": self.config.mapper.key(), "attribute": self.category,
                       "sentences": attribute_sentences(self.config.attribute), "seed": self.config.seed,
                       "validation_fraction": self.config.validation_fraction,
                       "reading": asdict(self.config.reading), "generator": GENERATOR_VERSION,
                       "data": default.DEFAULT_SYNTH.to_dict()}

    def _embedded_mapper_key(self) -> str:
        return digest(self._embedded_mapper_inputs())

    @functools.cached_property
    def checkpoint_sha256(self) -> str:
        return sha256(self.checkpoint)

    @property
    def mapper_file(self) -> str:
        return f"factor_{self.out.name}.pt"

    def _packaged_mapper(self) -> ChannelMapper | None:
        """The mapper shipped in the package for this study, if it is on the embedded set and matches
        (the checkpoint is hashed only when such a file exists)."""
        path = MAPPER_DIR / self.mapper_file
        if not uses_embedded(self.config.data) or not path.is_file():
            return None
        return read_mapper(path, self._embedded_mapper_key(), self.config.mapper)

    @property
    def slug(self) -> str:
        return self.category.lower().replace(" ", "_")

    def dataset(self, split: str) -> ImageDataset:
        return ImageDataset(self.splits[split], cache=preprocess_cache(self.image_size))

    def features(self, split: str) -> FeatureSet:
        if split not in self._features:
            started = time.perf_counter()
            key = {"checkpoint": file_fingerprint(self.checkpoint), "data": str(self.splits.root)}
            self._features[split] = cached_features(
                cache_dir() / "features", key, self.encoder, self.dataset(split), self.layer,
                self.config.batch_size, self.config.progress, f"features {split}", self.precision,
                self.config.workers)
            self.seconds[f"features {split}"] = time.perf_counter() - started
            self._check_has_finding(split)
        return self._features[split]

    def _check_has_finding(self, split: str) -> None:
        count = int(self._features[split].has_category(self.category_index).sum())
        if count == 0:
            raise DataError(self.splits.root, f"no {split} image has a {self.category!r} box",
                            f"{self.category} findings with boxes in the {split} split")

    def extract(self) -> None:
        for split in self.needed:
            self.features(split)

    def _mapper_key(self) -> str:
        """Everything the mapper's training reads: model, layer, size, settings, the training and
        validation images with their boxes, and the attribute's text embedding (so the text encoder
        and the sentence bank count too)."""
        key = {"checkpoint": file_fingerprint(self.checkpoint), "layer": self.layer,
               "image_size": list(self.image_size), "mapper": self.config.mapper.key(),
               "attribute": self.category, "seed": self.config.seed, "data": str(self.splits.root),
               "train": table_fingerprint(self.splits.train), "validation": table_fingerprint(self.splits.validation),
               "text_embedding": self.text_embedding.tolist()}
        return digest(key)

    def mapper(self) -> ChannelMapper:
        """The shipped mapper when it matches, else the trained one from ``OUT/<attribute>/mapper.pt``
        when its key matches, else a newly trained one (shipped too with ``--ship-to``)."""
        if self.packaged is not None:
            return self.packaged
        path = self.out / "mapper.pt"
        mapper = read_mapper(path, self._mapper_key(), self.config.mapper)
        if mapper is None:
            mapper = self._train_mapper(path)
        if self.config.ship_to:
            self._ship_mapper(path)
        return mapper

    def _train_mapper(self, path: Path) -> ChannelMapper:
        train, val = self.features(TRAIN), self.features(VALIDATION)
        started = time.perf_counter()
        mapper, history = train_mapper(
            train.maps, train.has_category(self.category_index), val.maps,
            val.has_category(self.category_index), self.text_embedding, self.config.mapper,
            self.config.seed, self.config.progress, self.device)
        save_torch(path, {"key": self._mapper_key(), "spatial": mapper.spatial,
                          "embed_dim": int(self.text_embedding.shape[0]), "state": mapper.state_dict()})
        self.seconds["mapper"] = time.perf_counter() - started
        save_json(self.out / "mapper_history.json", {"history": history})
        return mapper

    def _ship_mapper(self, trained: Path) -> None:
        """``trained`` under the embedded key into ``--ship-to``, with its entry in the mappers' card."""
        folder = Path(self.config.ship_to)
        payload = torch.load(trained, map_location="cpu", weights_only=True)
        shipped = save_torch(folder / self.mapper_file, {**payload, "key": self._embedded_mapper_key()})
        history = json.loads((self.out / "mapper_history.json").read_text())["history"]
        card_path = folder / MAPPER_CARD
        cards = json.loads(card_path.read_text()) if card_path.is_file() else {}
        matched = {k: v for k, v in self._embedded_mapper_inputs().items() if k not in ("generator", "data")}
        cards[self.mapper_file] = {
            "checkpoint": self.checkpoint.name, **matched, "data": embedded_data(), "history": history,
            **provenance(shipped, "mammo_interp.factor")}
        save_json(card_path, cards)

    def method_context(self, mapper: ChannelMapper) -> MethodContext:
        """What this study's methods read: its options, ``mapper``, the oracle channel (on first
        use) and the supervised reference's finding logit and layer when there is a reference."""
        config = self.config
        reference = None
        if self.reference is not None:
            model, trained = self.reference
            reference = (hm.LogitTarget(model, trained.findings.index(self.category)),
                         model.encoder.feature_module(model.feature_layer))
        return MethodContext(text_embedding=self.text_embedding, top_k=config.top_k, seed=config.seed,
                             ig_steps=config.ig_steps, cam_channels=config.cam_channels,
                             logit_scale=float(self.model.logit_scale().detach()), mapper=mapper,
                             oracle=lambda: self.oracle, reference=reference)

    def factor_heatmaps(self, mapper: ChannelMapper, features: FeatureSet) -> torch.Tensor:
        return hm.feature_heatmaps(FACTOR, self.method_context(mapper), features.maps, features.masks)

    def predict(self) -> dict[str, Any]:
        """FActOR boxes on the test split (CSV) and the speed of box prediction from raw images
        relative to a bare backbone forward of the same images."""
        mapper = self.mapper()
        test = self.features(TEST)
        localized = localize(self.factor_heatmaps(mapper, test), test, self.category_index, self.config.box)
        frame = predictions_frame(localized, test, FACTOR.label)
        atomic_write(self.out / "predictions.csv", lambda s: s.write(frame.to_csv(index=False).encode()))
        speed = self.time_prediction(mapper)
        save_json(self.out / "speed.json", speed)
        return speed

    def time_prediction(self, mapper: ChannelMapper, method: str = "factor", max_images: int = 64,
                        repeats: int = 2) -> dict[str, Any]:
        """:func:`time_box_prediction` of ``method`` on the first ``max_images`` test images."""
        dataset = self.dataset(TEST)
        count = min(max_images, len(dataset))
        images = torch.stack([dataset[i]["image"] for i in range(count)])
        heatmaps = self.box_methods(mapper, (method,))[method]
        with self.precision.autocast():
            speed = time_box_prediction(self.encoder, heatmaps, images, self.features(TEST).masks[:count],
                                        self.config.box, self.config.batch_size, repeats)
        return {**speed, "method": method, "layer": self.layer, "image_size": list(self.image_size)}

    @functools.cached_property
    def oracle(self) -> int:
        """The channel whose activation best covers the validation boxes (:func:`oracle_channel`)."""
        return oracle_channel(self.features(VALIDATION), self.category_index)

    def _heatmap_function(self, method: Method, context: MethodContext) -> Callable[..., torch.Tensor]:
        """``heatmaps(images, n, masks, maps)`` of a registered method in this study: channel
        methods read ``maps`` (``(N, C, h, w)`` features), model methods the images
        (``images(slice) -> (B, 1, H, W)``) through the CLIP cosine to the attribute."""
        if method.kind == "channel":
            return lambda images, n, masks, maps: hm.feature_heatmaps(method, context, maps, masks)
        if method.kind == "mask":
            return lambda images, n, masks, maps: hm.mask_heatmaps(method, masks)
        target = hm.SimilarityTarget(self.model, self.text_embedding)
        layer = self.encoder.feature_module(self.layer)
        return lambda images, n, masks, maps: hm.model_heatmaps(method, context, target, layer, images, n, masks)

    def box_methods(self, mapper: ChannelMapper, methods: Sequence[str]) -> dict[str, HeatmapFunction]:
        """Each of ``methods`` as a function of raw images (what box prediction costs in use); the
        supervised reference is not among them (it is a ceiling, not a method to deploy)."""
        context = self.method_context(mapper)
        made: dict[str, HeatmapFunction] = {}
        for name in methods:
            method = registry.get(name)
            if not method.timed:
                raise ValueError(f"box prediction of {name!r} is not timed: {method.summary}")
            if method.kind == "channel":
                made[name] = channel_method(self.encoder, self.layer, method, context)
            else:
                heatmaps = self._heatmap_function(method, context)
                made[name] = lambda images, masks, heatmaps=heatmaps: heatmaps(
                    lambda part: images[part], len(images), masks, None)
        return made

    def method_heatmaps(self, mapper: ChannelMapper, split: str = TEST, methods: tuple[str, ...] | None = None,
                        rows: Sequence[int] | None = None, fresh: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """The table row name and ``(N, H, W)`` heatmaps of ``split`` of each of ``methods`` (default:
        the config's), one method at a time (all of them at once would take N·H·W·4 bytes each: 0.3 GB
        for 1,920 images at 256 x 160); a method that needs what the study lacks (the supervised
        reference, where it has none) is left out. ``rows``: only those images of the split; ``fresh``: their
        feature maps recomputed from the encoder as it is now, never read from or written to the
        cache (for a model changed in memory, as the randomization check does)."""
        dataset = self.dataset(split) if rows is None else Subset(self.dataset(split), list(rows))
        if fresh:
            features = extract_features(self.encoder, dataset, self.layer, self.config.batch_size, False,
                                        workers=self.config.workers, precision=self.precision)
        else:
            features = self.features(split) if rows is None else self.features(split).subset(rows)
        n = len(features)

        def images(part: slice) -> torch.Tensor:
            return torch.stack([dataset[i]["image"] for i in range(*part.indices(n))])

        context = self.method_context(mapper)
        chosen = [registry.get(m) for m in methods or self.config.methods]
        chosen = [m for m in chosen if set(m.needs) <= context.provides()]
        for method in tqdm(chosen, desc="heatmaps", disable=not self.config.progress, leave=False):
            started = time.perf_counter()
            with self.precision.autocast():
                maps = self._heatmap_function(method, context)(images, n, features.masks, features.maps)
            self.seconds[f"heatmaps {method.name}"] = time.perf_counter() - started
            yield method.label, maps
            del maps  # before the next method's maps exist

    def _case_labels(self, features: FeatureSet, cases: np.ndarray) -> list[str]:
        """Side, view and a short image id for each figure row."""
        table = self.splits[TEST].set_index("image_id")
        return [view_label(table.at[features.image_ids[int(i)], "laterality"],
                           table.at[features.image_ids[int(i)], "view"], features.image_ids[int(i)])
                for i in cases]

    def evaluate(self) -> dict[str, Any]:
        """All methods on the test split: table, long CSV, overlay figure, run summary JSON."""
        speed = self.predict()
        mapper = self.mapper()
        test = self.features(TEST)
        positives = np.flatnonzero(test.has_category(self.category_index))
        cases = positives[np.linspace(0, len(positives) - 1, min(self.config.figure_cases, len(positives))).astype(int)]
        results, localized = evaluate_methods(self.method_heatmaps(mapper), test, self.category_index,
                                              self.config.box, self.config.n_boot, self.config.seed, keep=cases)
        report = Path(self.config.report_dir)
        stem = report / self.out.name
        caption = (f"{self.category} localization on the test split ({len(positives)} of {len(test)} images "
                   f"with {int(sum(len(b) for b in test.category_boxes(self.category_index)))} boxes), "
                   f"{self.encoder.config.name} layer {self.layer} at {self.image_size[0]}x{self.image_size[1]}, "
                   f"checkpoint {self.checkpoint.name}; heatmap quantile {self.config.box.quantile}, "
                   f"at most {self.config.box.max_boxes} boxes; 95% bootstrap CIs over images "
                   f"({self.config.n_boot} resamples)")
        written = write_localization_table(results, stem, caption, f"tab:loc-{self.slug}-{self.layer}")
        dataset = self.dataset(TEST)
        written += overlay_figure(
            [dataset[int(i)]["image"][0].numpy() for i in cases],
            localized,
            range(len(cases)), self._case_labels(test, cases), str(stem) + "_overlay",
            self.category)
        diagnostics = channel_diagnostics(mapper, self.features(VALIDATION), self.text_embedding,
                                          self.category_index)
        written += plot_channel_diagnostics(diagnostics, self.config.top_k, str(stem) + "_channels",
                                            f"{self.category}, layer {self.layer} (validation split)")
        summary = {"config": asdict(self.config),
                   "channels": {k: v for k, v in diagnostics.items() if not isinstance(v, np.ndarray)}, "checkpoint": str(self.checkpoint), "layer": self.layer,
                   "image_size": list(self.image_size), "category": self.category, "speed": speed,
                   "seconds": self.seconds,
                   "results": {m: {k: asdict(e) for k, e in r.items()} for m, r in results.items()},
                   "files": [str(p) for p in written]}
        save_json(self.out / "summary.json", summary)
        return summary


def shipped_reference_for(category: str, image_size: tuple[int, ...], data: str | None) -> Path | None:
    """The packaged supervised reference, for a study on the embedded set it was trained on, when it
    predicts ``category`` at ``image_size``; else None."""
    path = shipped_reference()
    if not uses_embedded(data) or not path.is_file():
        return None
    card = shipped_reference_card()
    trained = card["reference_config"]
    fits = (card["data"].get("synthetic") == default.DEFAULT_SYNTH.to_dict()
            and category in trained["findings"] and list(trained["image_size"]) == list(image_size))
    return path if fits else None


def read_mapper(path: Path, key: str, config: MapperConfig) -> ChannelMapper | None:
    """The mapper saved at ``path`` if its key is ``key``, else None."""
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("key") != key:
        return None
    state = {"offset": torch.tensor(0.0), **saved["state"]}  # mappers saved before offsets existed have none
    mapper = ChannelMapper(saved["spatial"], saved["embed_dim"], config.hidden, config.dropout, state["scale"],
                           state["offset"])
    mapper.load_state_dict(state)
    return mapper.eval()
