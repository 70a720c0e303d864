"""Audio clips for wav2vec 2.0: files (WAV, FLAC, OGG through soundfile) decoded to mono float32 at 16 kHz and
cropped, batches zero-padded with their lengths, and the `--data` spec that names a built-in set or a folder.

Built-in sets (nothing downloads): `spoken-words` (generated once with espeak-ng, see spoken_words), `tuxpaint`
(the human recordings of Debian's tuxpaint-stamps-default, unlabeled) and `tuxpaint-languages` (those in the 9
languages with 300+ recordings, labeled by language). Like the built-in image sets, pretraining reads the train
side of the seed-0 split, so the test voices and stamps stay unheard.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from selfsup.data.folder import scan_images, walk_images
from selfsup.data.open import class_folders, existing_folder, held_out_folder
from selfsup.data.split import check_fraction, stratified_split
from selfsup.errors import SelfsupError

from .spoken_words import WORDS, spoken_words
from .tuxpaint import LANGUAGES, tuxpaint_recordings

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
SAMPLE_RATE = 16_000
MAX_SECONDS = 4.0  # tuxpaint descriptions: median 1.1 s, 95 % under 3.4 s; spoken words about 1 s
MIN_SECONDS = 0.1  # a shorter clip holds no word: counted as a bad file
BUILTIN_AUDIO = ("spoken-words", "tuxpaint", "tuxpaint-languages")
VOICE_TEST_FRACTION = 0.25  # spoken-words: 2 of the 8 voices are only heard at test time
STAMP_TEST_FRACTION = 0.2  # tuxpaint: a fifth of the stamps (pictures) are only described at test time
_NO_AUDIO = f"no audio files (read: {' '.join(AUDIO_EXTENSIONS)})"


class BadAudioError(SelfsupError):
    """An audio file that cannot be used: corrupt, empty, of an unsupported format, or shorter than MIN_SECONDS."""

    def __init__(self, message: str, path: str = "", reason: str = ""):
        super().__init__(message)
        self.path, self.reason = path, reason


def index_audio(root: str) -> list[str]:
    """Paths of every audio file under `root` at any depth, sorted; hidden files and folders skipped (data/'s walk:
    a symlink loop is walked once)."""
    return walk_images(root, frozenset(AUDIO_EXTENSIONS))[0]


def audio_problem(path: str, sample_rate: int = SAMPLE_RATE) -> str | None:
    """Why `path` cannot be used, judged from its header alone (not audio, empty, too short), or None."""
    try:
        info = sf.info(path)
    except Exception as e:  # whatever libsndfile says about a user's file, the file is what is wrong
        return " ".join(str(e).split()) or type(e).__name__
    return _too_short(_resampled_length(info.frames, info.samplerate, sample_rate), sample_rate)


def scan_audio(paths: Sequence[str], threads: int = 8) -> tuple[list[str], list[tuple[str, str]]]:
    """(usable paths, [(path, reason)] of the others), reading only each file's header (data/'s threaded scan with
    `audio_problem`). A file whose samples turn out broken is found later, when decoded."""
    return scan_images(paths, threads, audio_problem)


def decode_audio(path: str, sample_rate: int = SAMPLE_RATE, max_samples: int | None = None,
                 crop: str = "start") -> torch.Tensor:
    """One audio file as a mono float32 waveform (T,) at `sample_rate`, T <= max_samples; raise BadAudioError
    naming the file if it cannot be decoded or is shorter than MIN_SECONDS.

    Channels are averaged. A longer file is cropped before it is decoded (only the frames needed are read):
    crop 'start' keeps its beginning, 'random' a window drawn from torch's global RNG.
    """
    try:
        with sf.SoundFile(path) as f:
            up, down = _ratio(f.samplerate, sample_rate)
            start, count = 0, f.frames
            length = _resampled_length(f.frames, f.samplerate, sample_rate)
            if max_samples is not None and length > max_samples:
                offset = int(torch.randint(length - max_samples + 1, ())) if crop == "random" else 0  # output samples
                start, count = offset * down // up, math.ceil(max_samples * down / up)
                f.seek(start)
            frames = f.read(count, dtype="float32", always_2d=True)  # (count, channels)
    except Exception as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise BadAudioError(f"cannot decode audio '{path}': {reason}; remove or fix the file", path, reason) from None
    wave = frames.mean(axis=1)  # (count,)
    if up != down:
        wave = resample_poly(wave, up, down)  # polyphase FIR low-pass: no aliasing when down-sampling
    wave = np.ascontiguousarray(wave[:max_samples], dtype=np.float32)
    problem = _too_short(len(wave), sample_rate) or (None if np.isfinite(wave).all() else "non-finite samples")
    if problem:
        raise BadAudioError(f"cannot use audio '{path}': {problem}; remove or fix the file", path, problem)
    return torch.from_numpy(wave)


def _ratio(rate: int, target: int) -> tuple[int, int]:
    """(up, down): target = rate * up / down in lowest terms."""
    g = math.gcd(rate, target)
    return target // g, rate // g


def _resampled_length(frames: int, rate: int, target: int) -> int:
    up, down = _ratio(rate, target)
    return -(-frames * up // down)  # resample_poly's output length: ceil(frames * up / down)


def _too_short(samples: int, sample_rate: int) -> str | None:
    if samples >= MIN_SECONDS * sample_rate:
        return None
    return f"{samples / sample_rate:.3f} s long, shorter than the {MIN_SECONDS} s a clip needs"


class AudioClips(Dataset):
    """Audio files decoded on access.

    In: paths of audio files; labels (N,) or None; the sample rate to resample to; max_seconds (None: whole
    clips); crop 'random' (a window from torch's global RNG: a seeded caller gets the same crops) or 'start';
    class names; groups (N,) (the voice or stamp a split keeps on one side), a name for logs; on_bad 'skip' (a
    file that fails to decode is logged once, appended to `log_file` as 'path<TAB>reason', and replaced by the
    next index that decodes, so a batch keeps its size) or 'error' (a BadAudioError).
    Out: (waveform float32 (T,),) or, when labeled, (waveform, label); T <= max_seconds * sample_rate.
    `skipped` lists the (path, reason) of files left out when the set was opened.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | None = None,
        sample_rate: int = SAMPLE_RATE,
        max_seconds: float | None = MAX_SECONDS,
        crop: str = "random",
        classes: list[str] | None = None,
        groups: Sequence[str] | None = None,
        name: str = "audio",
        on_bad: str = "skip",
        log_file: str | Path | None = None,
    ) -> None:
        if crop not in ("random", "start"):
            raise SelfsupError(f"unknown crop '{crop}': pass 'random' or 'start'")
        if on_bad not in ("skip", "error"):
            raise SelfsupError(f"unknown on_bad '{on_bad}': pass 'skip' or 'error'")
        if max_seconds is not None and max_seconds < MIN_SECONDS:
            raise SelfsupError(f"max_seconds={max_seconds} is shorter than the {MIN_SECONDS} s a clip needs; "
                               "pass e.g. 4")
        # numpy arrays, not lists of str: forked DataLoader workers would copy pages touching Python refcounts.
        self.paths = np.array(paths, dtype=str)
        n = len(self.paths)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)
        self.groups = None if groups is None else np.array(groups, dtype=str)
        for what, values in (("labels", self.labels), ("groups", self.groups)):
            if values is not None and tuple(values.shape) != (n,):
                raise SelfsupError(f"AudioClips got {n} paths but {what} of shape {tuple(values.shape)}; "
                                   "pass one per path")
        self.sample_rate, self.max_seconds, self.crop = sample_rate, max_seconds, crop
        self.max_samples = None if max_seconds is None else round(max_seconds * sample_rate)
        self.classes, self.name, self.on_bad, self.log_file = classes, name, on_bad, log_file
        self.skipped: list[tuple[str, str]] = []
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor] | tuple[torch.Tensor, int]:
        for j in range(i, i + len(self.paths)):
            j %= len(self.paths)
            try:
                wave = decode_audio(str(self.paths[j]), self.sample_rate, self.max_samples, self.crop)
            except BadAudioError as e:
                if self.on_bad == "error":
                    raise
                self._report(e)
                continue
            return (wave,) if self.labels is None else (wave, int(self.labels[j]))
        raise SelfsupError(f"none of the {len(self.paths)} audio files of {self.name} can be decoded; check the files")

    def _report(self, error: BadAudioError) -> None:
        if error.path in self._reported:
            return
        self._reported.add(error.path)
        log.warning("skipping an audio file: %s", error)
        if self.log_file is not None:
            with open(self.log_file, "a") as f:  # one short append per file: whole lines, even from workers
                f.write(f"{error.path}\t{error.reason}\n")

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None, labeled: bool = True,
               crop: str | None = None) -> AudioClips:
        """The clips paths[indices] with the same settings (without labels when not `labeled`)."""
        indices = np.asarray(indices, dtype=np.int64)
        clips = AudioClips(
            self.paths[indices], self.labels[indices] if labeled and self.labels is not None else None,
            self.sample_rate, self.max_seconds, crop or self.crop, self.classes,
            None if self.groups is None else self.groups[indices], name or self.name, self.on_bad, self.log_file,
        )
        clips.skipped = list(self.skipped)
        return clips


def collate_waveforms(batch: Sequence[torch.Tensor] | Sequence[tuple]) -> tuple[torch.Tensor, ...]:
    """(waves (B, T_max) float32 zero-padded at the end, lengths (B,) long) of waveforms (T_i,).

    Given AudioClips items instead, (waveform,) or (waveform, label), it returns the same, plus labels (B,)
    when they are labeled: it serves as a DataLoader's collate_fn.
    """
    if not batch:
        raise SelfsupError("collate_waveforms got an empty batch; pass at least one waveform")
    items = [b if isinstance(b, tuple) else (b,) for b in batch]
    waves = [item[0].float() for item in items]
    if any(w.dim() != 1 for w in waves):
        raise SelfsupError(f"collate_waveforms takes mono waveforms (T,); got shapes {[tuple(w.shape) for w in waves]}")
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.int64)
    padded = pad_sequence(waves, batch_first=True)  # (B, T_max)
    if len(items[0]) == 1:
        return padded, lengths
    return padded, lengths, torch.tensor([item[1] for item in items], dtype=torch.int64)


def open_audio(data: str | os.PathLike, max_seconds: float | None = MAX_SECONDS, on_bad: str = "skip") -> AudioClips:
    """Unlabeled clips for pretraining, random crops: `spoken-words` (the train voices), `tuxpaint` (every
    recording of the train stamps, 12 languages), `tuxpaint-languages` (its train side, 9 languages), or every
    audio file under a folder. Files whose header shows them unusable are skipped, counted in `skipped` and
    logged (on_bad 'error': a BadAudioError naming the first)."""
    data = os.fspath(data)
    if data == "tuxpaint":
        recordings = tuxpaint_recordings()
        train, _ = split_by_group([r.stamp for r in recordings], STAMP_TEST_FRACTION, 0)
        return AudioClips([recordings[i].path for i in train], None, SAMPLE_RATE, max_seconds, "random",
                          groups=[recordings[i].stamp for i in train], name="tuxpaint/train", on_bad=on_bad)
    if data in BUILTIN_AUDIO:
        train = open_labeled_audio(data, 0, max_seconds=max_seconds, on_bad=on_bad)[0]
        return train.subset(np.arange(len(train)), labeled=False, crop="random")
    root = existing_folder(data, BUILTIN_AUDIO, "audio files")
    paths = index_audio(root)
    if not paths:
        raise SelfsupError(f"'{data}' contains {_NO_AUDIO}: pass a folder of audio files or a built-in name "
                           f"({'|'.join(BUILTIN_AUDIO)})")
    good, bad = _usable(paths, on_bad, data)
    clips = AudioClips(good, None, SAMPLE_RATE, max_seconds, "random", name=data, on_bad=on_bad)
    clips.skipped = bad
    return clips


def open_labeled_audio(data: str | os.PathLike, seed: int = 0, test_fraction: float = 0.2,
                       max_seconds: float | None = MAX_SECONDS, on_bad: str = "skip",
                       ) -> tuple[AudioClips, AudioClips, list[str]]:
    """(train, test, class names) for evaluation; both sides crop at the start, so features are deterministic.

    `spoken-words`: label = word, split by voice (2 of 8 held out, seeded). `tuxpaint-languages`: label = the
    language among LANGUAGES, split by stamp (a fifth held out, seeded), so no picture's descriptions are on
    both sides. A folder: DIR/train/<class>/... with DIR/test/<class>/... (or val/), or DIR/<class>/... split
    per class with `test_fraction` and `seed`. Classes are sorted (built-ins: in their own order).
    """
    check_fraction(test_fraction)
    data = os.fspath(data)
    if data == "spoken-words":
        clips = spoken_words()
        classes = list(WORDS)
        everything = AudioClips([c.path for c in clips], [classes.index(c.word) for c in clips], SAMPLE_RATE,
                                max_seconds, "start", classes, [c.voice for c in clips], data, on_bad)
        return _split(everything, split_by_group(everything.groups, VOICE_TEST_FRACTION, seed), data)
    if data == "tuxpaint-languages":
        recordings = [r for r in tuxpaint_recordings() if r.language in LANGUAGES]
        classes = list(LANGUAGES)
        everything = AudioClips([r.path for r in recordings], [classes.index(r.language) for r in recordings],
                                SAMPLE_RATE, max_seconds, "start", classes, [r.stamp for r in recordings], data, on_bad)
        return _split(everything, split_by_group(everything.groups, STAMP_TEST_FRACTION, seed), data)
    if data == "tuxpaint":
        raise SelfsupError("tuxpaint is unlabeled: to evaluate, pass tuxpaint-languages, spoken-words or a labeled "
                           "folder")
    root = existing_folder(data, BUILTIN_AUDIO, "audio files")
    held_out = held_out_folder(root)
    if held_out is not None:
        train = _class_files(os.path.join(root, "train"), on_bad)
        test = _class_files(os.path.join(root, held_out), on_bad)
        classes = sorted(set(train) | set(test))
        return (_labeled_clips(train, classes, os.path.join(root, "train"), max_seconds, on_bad),
                _labeled_clips(test, classes, os.path.join(root, held_out), max_seconds, on_bad), classes)
    files = _class_files(root, on_bad)
    classes = sorted(files)
    for c in classes:
        if len(files[c][0]) < 2:
            raise SelfsupError(f"class '{c}' has {len(files[c][0])} usable audio file; a train/test split needs at "
                               "least 2 per class: add files, or provide separate train/ and test/ folders")
    everything = _labeled_clips(files, classes, root, max_seconds, on_bad)
    return _split(everything, stratified_split(everything.labels.numpy(), test_fraction, seed, classes), root)


def split_by_group(groups: Sequence[str], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), sorted: round(test_fraction * G) of the G distinct groups (at least 1, at most G-1),
    drawn with `seed`, have all their members in test; no group is on both sides."""
    groups = np.asarray(groups, dtype=str)
    names = np.unique(groups)
    if len(names) < 2:
        raise SelfsupError(f"a split by group needs at least 2 groups, got {len(names)}")
    k = min(max(round(test_fraction * len(names)), 1), len(names) - 1)
    held_out = np.random.default_rng(seed).permutation(names)[:k]
    is_test = np.isin(groups, held_out)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _split(everything: AudioClips, indices: tuple[np.ndarray, np.ndarray], name: str,
           ) -> tuple[AudioClips, AudioClips, list[str]]:
    train, test = indices
    return everything.subset(train, f"{name}/train"), everything.subset(test, f"{name}/test"), everything.classes


def _usable(paths: list[str], on_bad: str, where: str) -> tuple[list[str], list[tuple[str, str]]]:
    """scan_audio(paths); the unusable ones logged (on_bad 'skip') or the first a BadAudioError ('error')."""
    good, bad = scan_audio(paths)
    if bad:
        path, reason = bad[0]
        if on_bad == "error" or not good:
            hint = "fix or remove them" + (", or pass on_bad='skip'" if good else "")
            raise BadAudioError(f"{len(bad)} of {len(paths)} audio files in '{where}' cannot be used, e.g. '{path}': "
                                f"{reason}; {hint}", path, reason)
        log.warning("skipping %d of %d audio files in '%s' that cannot be used, e.g. '%s': %s",
                    len(bad), len(paths), where, path, reason)
    return good, bad


def _class_files(folder: str, on_bad: str) -> dict[str, tuple[list[str], list[tuple[str, str]]]]:
    """Class name -> (usable audio paths, skipped (path, reason)) of each non-hidden subfolder of `folder`."""
    return {c: _usable(paths, on_bad, os.path.join(folder, c))
            for c, paths in class_folders(folder, index_audio, "audio files", _NO_AUDIO).items()}


def _labeled_clips(files: dict[str, tuple[list[str], list[tuple[str, str]]]], classes: list[str], name: str,
                   max_seconds: float | None, on_bad: str) -> AudioClips:
    paths = [p for c in files for p in files[c][0]]
    labels = [classes.index(c) for c in files for _ in files[c][0]]
    clips = AudioClips(paths, labels, SAMPLE_RATE, max_seconds, "start", classes, name=name, on_bad=on_bad)
    clips.skipped = [bad for c in files for bad in files[c][1]]
    return clips
