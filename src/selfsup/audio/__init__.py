"""Audio (wav2vec 2.0): audio folders and the built-in speech sets, decoding to 16 kHz mono clips, and the MFCC
baseline.

files or espeak-ng / tuxpaint -> AudioClips (decode, resample, crop) -> collate_waveforms -> encoder
"""

from .data import (
                   AUDIO_EXTENSIONS,
                   BUILTIN_AUDIO,
                   MAX_SECONDS,
                   MIN_SECONDS,
                   SAMPLE_RATE,
                   AudioClips,
                   BadAudioError,
                   audio_problem,
                   collate_waveforms,
                   decode_audio,
                   index_audio,
                   open_audio,
                   open_labeled_audio,
                   scan_audio,
                   split_by_group,
)
from .mfcc import MFCC_DIM, mfcc_features
from .spoken_words import VOICES, WORDS, SpokenWord, spoken_words
from .tuxpaint import LANGUAGES, Recording, tuxpaint_recordings

__all__ = [
    "AUDIO_EXTENSIONS", "BUILTIN_AUDIO", "LANGUAGES", "MAX_SECONDS", "MFCC_DIM", "MIN_SECONDS", "SAMPLE_RATE",
    "VOICES", "WORDS", "AudioClips", "BadAudioError", "Recording", "SpokenWord", "audio_problem",
    "collate_waveforms", "decode_audio", "index_audio", "mfcc_features", "open_audio", "open_labeled_audio",
    "scan_audio", "spoken_words", "split_by_group",
    "tuxpaint_recordings",
]
