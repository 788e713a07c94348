"""The audio domain's data: the prepared speech cache, noisy/clean pairs, the DataModule.

    prepare_corpus(cfg)          sentences + voices -> cache/audio/<tag>/{train,val,test}/*.wav
                                 and manifest.json (idempotent; a progress bar while synthesising)
    AudioDataModule.from_config(cfg)

Splits: the sentences are split three ways (no sentence is shared); train and val utterances are
spoken by `data.train_voices`, test utterances by `data.test_voices` (held-out voices). Noise is
mixed on the fly: training pairs draw a new crop, noise kind and SNR every time; val / test pairs
are fixed per index (seeded), at `data.test_snr` dB when set. The `recorded` noise kind draws
from the recordings of Debian packages (`data.packages`, see recordings.py), which also add real
speech to the real-clip test. `data.train_limit` trains on the first N training utterances
only (the customisation target's share of the corpus). `data.speed_perturb` resamples each
training utterance by a random speed factor before its crop (pitch and formants move with it: the
training voices cover more of the voices held out). A user folder (`data.folder`) with paired
`clean/` and `noisy/` files (the VoiceBank-DEMAND layout) replaces the synthetic data; files that
cannot be read or have no partner of the same length are skipped and counted.

A batch: {"x0": [B, 1, M, T] clean normalised log-mel, "cond": {"noisy": [B, 1, M, T]},
          "clean_wave": [B, L], "noisy_wave": [B, L], "length": [B] valid samples}.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from scipy.signal import resample_poly
from torch.utils.data import DataLoader, Dataset

from diffusekit.core.app.config import data_cache
from diffusekit.core.app.data_loading import loader_options
from diffusekit.core.errors import ConfigError, DataError
from diffusekit.domains.audio import corpus, recordings
from diffusekit.domains.audio.concealment import GAP_FILLS, fill_gaps, lost_frames
from diffusekit.domains.audio.features import MelFeatures
from diffusekit.domains.audio.noise import (NOISES, NoisePool, PacketLoss, drop_packets,
                                            noisy_version)

SPEED_GRID = 100  # speed factors are rounded to k / SPEED_GRID (resampling by a small ratio)


def data_root(cfg: DictConfig) -> Path:
    """cfg.data.cache_dir, else $DIFFUSEKIT_DATA/audio, else ~/.cache/diffusekit/audio."""
    if cfg.data.get("cache_dir"):
        return Path(str(cfg.data.cache_dir)).expanduser()
    return data_cache("audio")


def corpus_dir(cfg: DictConfig) -> Path:
    """The folder of this corpus configuration (a hash of the settings that shape it)."""
    d = cfg.data
    keys = {k: OmegaConf.to_container(d[k]) if OmegaConf.is_config(d[k]) else d[k]
            for k in ("n_train", "n_val", "n_test", "train_voices", "test_voices", "seed")}
    keys["sample_rate"] = int(cfg.features.sample_rate)
    tag = hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:10]
    return data_root(cfg) / f"speech-{tag}"


def prepare_corpus(cfg: DictConfig, sentences: list[str] | None = None,
                   progress: bool = True) -> Path:
    """Synthesise the corpus of `cfg` (once) and return its manifest.json. `sentences` replaces
    the Gutenberg sentences (the tests pass a few)."""
    d, sr = cfg.data, int(cfg.features.sample_rate)
    root = corpus_dir(cfg)
    manifest = root / "manifest.json"
    if manifest.exists():
        return manifest
    sizes = {"train": int(d.n_train), "val": int(d.n_val), "test": int(d.n_test)}
    voices = {"train": list(d.train_voices), "val": list(d.train_voices),
              "test": list(d.test_voices)}
    missing = [v for v in {*voices["train"], *voices["test"]} if not corpus.engine_available(v)]
    if missing:
        raise DataError(f"speech engine not installed for voices {sorted(missing)} (install the "
                        "Debian packages flite and espeak-ng, as `make venv` does)")
    n = sum(sizes.values())
    if sentences is None:
        sentences = corpus.shakespeare_sentences(data_root(cfg), n, int(d.seed))
    if len(sentences) < n:
        raise DataError(f"{len(sentences)} sentences given, {n} needed")
    rng = random.Random(int(d.seed))
    jobs, rows, start = [], [], 0
    for split, size in sizes.items():
        for i, text in enumerate(sentences[start:start + size]):
            voice = voices[split][i % len(voices[split])] if split != "train" else \
                rng.choice(voices[split])
            path = root / split / f"{split}-{i:05d}.wav"
            jobs.append(corpus.Job(text, voice, path, sr))
            rows.append({"split": split, "path": str(path.relative_to(root)), "voice": voice,
                         "text": text})
        start += size
    results = corpus.synthesise_all(jobs, workers=int(d.workers), progress=progress)
    kept = [row for row, path in zip(rows, results) if path is not None]
    failed = len(rows) - len(kept)
    real = [str(p.relative_to(root)) for p in _copy_real(cfg, root)]
    manifest.write_text(json.dumps({"sample_rate": sr, "utterances": kept, "failed": failed,
                                    "real": real}, indent=1))
    if failed:
        print(f"audio: {failed} of {len(rows)} utterances could not be synthesised (skipped)")
    return manifest


def _copy_real(cfg: DictConfig, root: Path) -> list[Path]:
    """The real CMU ARCTIC clips, copied into the corpus folder (none when offline)."""
    if not bool(cfg.data.real_clips):
        return []
    out = []
    for clip in corpus.arctic_clips(data_root(cfg), int(cfg.features.sample_rate)):
        target = root / "real" / clip.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(clip.read_bytes())
        out.append(target)
    return out


def train_limit(d: DictConfig) -> int | None:
    """`data.train_limit`: how many of the corpus's training utterances a run uses (the first;
    the corpus's order is random), None for all. The corpus folder does not depend on it, so a run
    on a share of the training set reads the full run's corpus and writes nothing."""
    limit = d.get("train_limit")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"data.train_limit must be a positive number of utterances or null, "
                          f"got {limit!r}")
    return limit


def speed_range(d: DictConfig) -> tuple[float, float] | None:
    """`data.speed_perturb`: the range [low, high] of the training utterances' speed factors,
    None (or absent) for no speed perturbation."""
    value = d.get("speed_perturb")
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not 0 < low <= high:  # also catches nan
        raise ConfigError(f"data.speed_perturb must be [low, high] speed factors with "
                          f"0 < low <= high (or null), got {value!r}")
    return low, high


def change_speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """`wave` [L] played `factor` times as fast at the same sample rate: about L / factor samples,
    every frequency (pitch, formants) times `factor`. Speed perturbation (Ko et al. 2015, "Audio
    augmentation for speech recognition"): resampled from rate k to rate SPEED_GRID, with
    k = round(factor * SPEED_GRID), by scipy's polyphase filter (band-limited, so a factor above 1
    does not alias; about 60 times as fast as torchaudio's resample at these ratios)."""
    k = max(1, round(factor * SPEED_GRID))
    if k == SPEED_GRID:
        return wave
    return resample_poly(wave, SPEED_GRID, k).astype(np.float32)


def fit_length(wave: np.ndarray, n: int, start: int = 0) -> tuple[np.ndarray, int]:
    """`n` samples of `wave` from `start`, zero-padded at the end; and how many are real."""
    piece = wave[start:start + n]
    valid = len(piece)
    return np.pad(piece, (0, n - valid)).astype(np.float32), valid


class NoisyPairs(Dataset):
    """Clean utterances mixed with noise on the fly (see the module docstring).

    waves: clean waveforms; features: `MelFeatures`; frames: T of every item; train: random crops
    and fresh noise per access, else fixed per index; kinds / snr_range: the noise; snr: a fixed
    SNR in dB (None: uniform in snr_range); pool: babble / recorded noise sources; speeds: the
    range of a training utterance's speed factor (`change_speed`, drawn uniformly; None: none).
    """

    def __init__(self, waves: list[np.ndarray], features: MelFeatures, frames: int, *,
                 train: bool, kinds: list[str], snr_range: tuple[float, float],
                 snr: float | None = None, pool: NoisePool | None = None, seed: int = 0,
                 packet_loss: PacketLoss = PacketLoss(),
                 speeds: tuple[float, float] | None = None) -> None:
        if not waves:
            raise DataError("no usable audio in this split")
        for kind in kinds:
            NOISES.get(kind)  # an unknown kind: one error line now, not at the first batch
        self.waves, self.features, self.frames = waves, features, frames
        self.samples = features.samples_for(frames)
        self.train, self.kinds, self.snr_range, self.snr = train, kinds, snr_range, snr
        self.pool, self.seed, self.packet_loss = pool or NoisePool(), seed, packet_loss
        self.speeds = speeds if train else None
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> dict:
        rng = self._rng if self.train else np.random.default_rng([self.seed, i])
        wave = self.waves[i]
        if self.speeds is not None:
            wave = change_speed(wave, float(rng.uniform(*self.speeds)))
        start = int(rng.integers(0, max(1, len(wave) - self.samples + 1))) if self.train else 0
        clean, valid = fit_length(wave, self.samples, start)
        snr_range = (self.snr, self.snr) if self.snr is not None else self.snr_range
        noisy, _, _ = noisy_version(clean[:valid], self.features.sample_rate, rng, self.pool,
                                    self.kinds, snr_range)
        noisy, lost = drop_packets(clean[:valid], noisy, self.features.sample_rate, rng,
                                   self.packet_loss)
        noisy = np.pad(noisy, (0, self.samples - valid))
        lost = None if lost is None else np.pad(lost, (0, self.samples - valid))
        if self.train:  # level augmentation
            gain = float(10 ** (rng.uniform(-10, 6) / 20))
            clean, noisy = clean * gain, noisy * gain
        peak = max(1.0, float(np.abs(noisy).max()) / 0.99)
        return make_item(clean / peak, noisy / peak, valid, self.features, lost)


def make_item(clean: np.ndarray, noisy: np.ndarray, valid: int, features: MelFeatures,
              lost: np.ndarray | None = None) -> dict:
    """The item dict of one (clean, noisy) pair of equal length: the waveforms and the samples
    lost to packet loss ("lost" [L] bool; none: all False); the features are computed per batch
    by `Collate` (one STFT for the whole batch)."""
    c, n = torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32)), \
        torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32))
    gone = torch.zeros(len(n), dtype=torch.bool) if lost is None else torch.from_numpy(
        np.ascontiguousarray(lost, dtype=bool))
    return {"clean_wave": c, "noisy_wave": n, "lost": gone, "length": torch.tensor(valid)}


class Collate:
    """Stack items and add their log-mels: "x0" [B, 1, M, T] of the clean waves and
    cond["noisy"] of the noisy ones, whose frames touching a lost sample are shown as the gap
    fill `fill` (`concealment.GAP_FILLS`, `data.packet_loss.fill`; "floor" leaves them as they
    are)."""

    def __init__(self, features: MelFeatures, fill: str = "floor") -> None:
        self.features, self.fill = features, fill
        GAP_FILLS.get(fill)  # an unknown fill: one error line now, not at the first batch

    def __call__(self, items: list[dict]) -> dict:
        batch = torch.utils.data.default_collate(items)
        both = self.features.encode(torch.cat([batch["clean_wave"], batch["noisy_wave"]]))
        x0, noisy = both[:, None].chunk(2)
        if bool(batch["lost"].any()):
            unknown = lost_frames(batch["lost"], self.features.hop, self.features.n_fft)
            noisy = fill_gaps(noisy, unknown, self.fill)
        return {"x0": x0, "cond": {"noisy": noisy}, **batch}


class PairedFolder(Dataset):
    """A user's `clean/` and `noisy/` folders, paired by file name; each item the first `frames`
    frames of a pair (zero-padded). Unreadable files, files without a partner and pairs of
    different lengths are skipped; `skipped` counts them and `problems` says why."""

    def __init__(self, root: Path, features: MelFeatures, frames: int) -> None:
        root = Path(root).expanduser()
        if not (root / "clean").is_dir() or not (root / "noisy").is_dir():
            raise DataError(f"audio folder {root} must hold the sub-folders clean/ and noisy/ "
                            "(paired files of the same name)")
        self.features, self.samples = features, features.samples_for(frames)
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.problems: list[str] = []
        clean_files = {p.name: p for p in sorted((root / "clean").iterdir()) if p.is_file()}
        noisy_files = {p.name: p for p in sorted((root / "noisy").iterdir()) if p.is_file()}
        for name in sorted(set(clean_files) | set(noisy_files)):
            if name not in clean_files or name not in noisy_files:
                self.problems.append(f"{name}: no partner")
                continue
            try:
                c = corpus.load_wav(clean_files[name], features.sample_rate)
                n = corpus.load_wav(noisy_files[name], features.sample_rate)
            except DataError as exc:
                self.problems.append(str(exc))
                continue
            if abs(len(c) - len(n)) > features.hop:
                self.problems.append(f"{name}: clean and noisy lengths differ")
                continue
            m = min(len(c), len(n))
            self.pairs.append((c[:m], n[:m]))
        self.skipped = len(self.problems)
        if self.skipped:
            print(f"audio: skipped {self.skipped} file(s) of {root} "
                  f"(first: {self.problems[0]})")
        if not self.pairs:
            raise DataError(f"audio folder {root} holds no readable clean/noisy pair")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        c, n = self.pairs[i]
        clean, valid = fit_length(c, self.samples)
        noisy, _ = fit_length(n, self.samples)
        return make_item(clean, noisy, valid, self.features)


def _load_split(root: Path, rows: list[dict], split: str, sr: int) -> list[np.ndarray]:
    waves = []
    for row in rows:
        if row["split"] == split:
            try:
                waves.append(corpus.load_wav(root / row["path"], sr))
            except DataError:
                continue
    return waves


class AudioDataModule(L.LightningDataModule):
    """Train / val / test splits of the prepared corpus (or of a user folder); see the module
    docstring. `prepare_data` synthesises the corpus when it is missing."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.features = MelFeatures.from_config(cfg.features)
        self.splits: dict[str, Dataset] = {}
        self.real: list[np.ndarray] = []

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "AudioDataModule":
        """Build from the resolved domain config."""
        return cls(cfg)

    def prepare_data(self) -> None:
        if not self.cfg.data.folder:
            prepare_corpus(self.cfg)
            recordings.fetch_recordings(self.cfg, data_root(self.cfg))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        d, f = self.cfg.data, self.features
        frames, eval_frames = int(d.frames), int(d.eval_frames)
        if d.folder:
            pairs = PairedFolder(Path(str(d.folder)), f, eval_frames)
            n_test = max(1, len(pairs) // 10)
            idx = list(range(len(pairs)))
            subset = torch.utils.data.Subset
            self.splits = {"train": subset(pairs, idx[n_test:] or idx),
                           "val": subset(pairs, idx[:n_test]), "test": subset(pairs, idx[:n_test])}
            return
        manifest = prepare_corpus(self.cfg)
        root, info = manifest.parent, json.loads(manifest.read_text())
        rows, sr = info["utterances"], f.sample_rate
        train = _load_split(root, rows, "train", sr)[:train_limit(d)]
        packaged = recordings.load_recordings(self.cfg, data_root(self.cfg), sr)
        pool = NoisePool(speech=train, recorded=packaged.noise)
        kinds, snr_range = list(d.noise_kinds), (float(d.snr_min), float(d.snr_max))
        test_snr = None if d.test_snr is None else float(d.test_snr)
        seed = int(d.seed)
        loss = PacketLoss.from_config(d.get("packet_loss"))  # train and val; the test is as it was
        self.splits = {
            "train": NoisyPairs(train, f, frames, train=True, kinds=kinds, snr_range=snr_range,
                                pool=pool, seed=seed, packet_loss=loss, speeds=speed_range(d)),
            "val": NoisyPairs(_load_split(root, rows, "val", sr), f, eval_frames, train=False,
                              kinds=kinds, snr_range=snr_range, pool=pool, seed=seed + 1,
                              packet_loss=loss),
            "test": NoisyPairs(_load_split(root, rows, "test", sr), f, eval_frames, train=False,
                               kinds=kinds, snr_range=snr_range, snr=test_snr, pool=pool,
                               seed=seed + 2),
        }
        self.real = [corpus.load_wav(root / p, sr) for p in info.get("real", [])]
        self.real += packaged.speech

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        d = self.cfg.data
        return DataLoader(self.splits[split], batch_size=int(d.batch_size), shuffle=shuffle,
                          collate_fn=self.collate(),
                          drop_last=shuffle and len(self.splits[split]) >= int(d.batch_size),
                          **loader_options(d))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def full_batch(self, split: str = "test", n: int | None = None) -> dict:
        """The first `n` items of a split as one batch dict."""
        self.setup()
        data = self.splits[split]
        items = [data[i] for i in range(min(len(data), n or len(data)))]
        return self.collate()(items)

    def collate(self) -> Collate:
        """The batch maker of this config (its gap fill: `data.packet_loss.fill`)."""
        return Collate(self.features, PacketLoss.from_config(self.cfg.data.get("packet_loss")).fill)
