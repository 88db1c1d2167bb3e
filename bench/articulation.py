"""Do dubbed mouths articulate the words? Measured on the output frames, never on the engine.

    .venv/bin/python -m bench.articulation                  # 7 clips x 4 languages + vasp
                                                            #   (~9 min on 2 busy cores)
    .venv/bin/python -m bench.articulation --quick          # 3 clips x 2 languages + vasp
    .venv/bin/python -m bench.articulation --clips face_3,d20 --langs en,zh --no-vasp
    .venv/bin/python -m bench.articulation --reuse --json out.json   # re-measure old outputs
    # another engine, e.g. the "before" figures from a worktree of 97d6b81:
    git worktree add --detach /work/wt-before 97d6b81
    PYTHONPATH=/work/wt-before/src .venv/bin/python -m bench.articulation \
        --tag before --json bench/.cache/articulation_before.json

Speech: phoneme-timed synthetic speech from espeak-ng (tools/phonetimed.py: the library's
phoneme events give every phoneme's start and end, in IPA) in English, German, Spanish and
Mandarin (pinyin with tone digits), sentences rich in /p b m/, rounded, spread and open
vowels and /f v/. Every clip gets its own sentences and voice variant, spoken at a rate
that makes it about 0.4 s shorter than the clip (cropped at a phoneme boundary if it still
overruns). Wav + phone list are cached under bench/.cache/articulation/speech.

Dub: identify, then sync the first face (``face_001``) with the speech inserted at 0 and
the original track muted, on each single-person clip of bench/quality.py. Every output
frame is decoded and its 68 landmarks detected again with dlib (bench/_landmarks.py, the
same instrument as bench/quality.py); the source frames get the same treatment.

Frame k shows time t_k = k / fps. A phoneme [s, e) "covers" the frames with
t_k in [s - 0.5/fps, e + 0.5/fps] (so even a 10 ms phoneme covers a frame); its "core"
frames are those with t_k in [s, e), or the one frame nearest its middle when none is.
Phoneme classes (IPA label, stress/length/tone marks stripped; diphthongs by their first
vowel for height, by all their vowels for spread/rounded):
  bilabial   label starts with p, b or m (p, b, m, pʰ, pf, mʲ ...; not Spanish β)
  open       first vowel a ɑ æ ɐ ɒ ʌ ɶ ä (also aɪ aʊ ai ɑu ...)
  mid        first vowel e ɛ ə ɜ ɞ o ɔ ø œ ɘ ɵ ɤ ɚ ɝ
  close      first vowel i ɪ y ʏ u ʊ ɨ ʉ ɯ ᵻ
  spread     every vowel in {i ɪ e ɛ}: i iː ɪ e eː ɛ eɪ iɛ ...
  rounded    every vowel in {u ʊ o ɔ y ʏ ø œ ɵ ʉ}, or w ʍ ɥ: uː oː ɔː yː øː oʊ ...
  labiodental  f v ɱ

Measures (output mouth; "src" = the same on the untouched source video against the new
phoneme timings, the chance reference):
  close   share of bilabial phonemes whose minimum opening over their covered frames is
          below half the person's speaking median opening (median inner-lip gap / IOD over
          the SOURCE frames where the source speaks, bench/quality.speaking). Target >= 0.85
  contr   median opening over the core frames of open vowels / max(median opening over
          the core frames of bilabials, 0.02). Target >= 2.5
  width   median mouth width (corners / IOD) over core frames of spread vowels / that of
          rounded vowels and w. Target >= 1.10
  openX   share of open-vowel phonemes whose maximum opening over their covered frames is
          below the same half-median threshold (rendered closed). Target <= 5 %
  lag, r  lag L in +-5 frames maximising r(opening[k], target[k - L]) (positive = mouth
          behind the sound) and that r. The target curve is the mean over each frame's
          interval [t_k - 0.5/fps, t_k + 0.5/fps) (1 ms steps) of: open vowel 1.0, mid 0.6,
          close 0.35, bilabial 0, labiodental 0.15, other consonant 0.3, silence 0.
          Target lag 0 or +1
  glitch  output frames whose lower face jumps or looks beyond anything the source does,
          or whose landmarks are implausible. Each frame's lower face is aligned by a
          similarity transform on stable points (eye corners, nose bridge and base) to a
          canonical face (the source's median landmarks, inter-ocular 48 px), cropped (jaw
          3..13 across, nose base to chin + 5 px down), grey, Gaussian sigma 1, normalised.
          Three criteria, any one makes a glitch:
          - novelty away from the mouth: the crop outside the "mouth zone" (every source
            and output mouth's outer lips, extended 0.45 mouth widths down for the jaw,
            dilated) renormalised, mean |difference| to the NEAREST source frame, over
            1.4x the 95th percentile of the same for source frames (to the nearest other
            source frame). Smears, stretched cheeks, hands show here; a new mouth shape,
            which is the point of a dub, does not.
          - jump: mean |change| of the whole crop from the previous output frame over
            1.5x the largest such change between consecutive source frames.
          - shape: lower-face landmarks (jaw 2..14, lips; canonical coordinates) farther
            (RMS, in IOD) from the source's median shape than 1.5x the farthest source
            frame, or no face at all where the source has one.
          Target 0. (Until this stop the novelty was taken over the whole crop, mouth
          included, against the source's maximum: that counted every mouth shape the
          person never made as a glitch, which is what articulation has to produce.)
  sharp   variance of the Laplacian (grey, 3x3) inside the outer-lip polygon, mean over
          the dubbed frames, output / source. Target >= 0.9
  sharpM  the same, each output frame set against the source frames whose mouth is
          opened as far (``matched_sharpness``): frame by frame, a source talking with
          its teeth showing makes any dub's lips read soft. Target 0.9-1.2 (issue 20)

vasp case: ../shared/media/vasp__combine001.mp4 (three 224 px panels side by side), the
woman in the middle (chosen by position) dubbed with videoretalking__audio_1.wav 0..3000 ms
inserted at 1000 ms; measured on the middle panel (x in [224, 448)) only: glitch frames and
sharpness (real speech, no phoneme times). The engine at 97d6b81 smears frames 62-64.

The means are over all clip x language rows (the vasp case counts for glitches and
sharpness only). Outputs are cached under bench/.cache/articulation (``--reuse`` measures
the existing ones again instead of syncing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.io import wavfile

import lipdub
from bench._landmarks import Detector, frames, source_landmarks
from bench.common import CACHE, CLIPS, MEDIA, QUICK, fps_of, lag_r, speaking
from lipdub.faces.geometry import mouth_opening, mouth_width
from lipdub.media.audio import read_video_audio, to_mono
from lipdub.speech.features import speech_loudness

ROOT = Path(__file__).resolve().parents[1]
OUT = CACHE / "articulation"
LM_CACHE = CACHE / "quality"  # source landmarks: same instrument, same files as quality.py
SR = 16000
MAX_LAG = 5
SHORTER_S = 0.4  # the speech ends this much before the clip
GLITCH_MARGIN = 1.5
TAG = ""  # --tag: kept apart in the cache, e.g. the outputs of another engine
# --closure-labels: espeak's stops read from their silent closure (phonetimed.with_closures),
# as Festival and flite time them; espeak itself times a stop from its release.
CLOSURE_LABELS = False
NOVELTY_MARGIN = 1.4
NOVELTY_FLOOR = 0.25  # mean |difference| of unit-variance crops: a quarter of the contrast
# The middle face is chosen by where it is: ids follow prominence, which may change.
VASP = ("vasp__combine001.mp4", "videoretalking__audio_1.wav", (224, 448))

# Sentences per language: /p b m/, rounded (u o w, ü ö), spread (i e), open (a), /f v/.
TEXTS: dict[str, list[str]] = {
    "en": [
        "Mama bought butter and a bowl of blueberries for the baby.",
        "Please pass me the map before Bob opens the box.",
        "We moved five heavy boxes to the boat at noon.",
        "My father views the blue moon over the misty beach.",
        "Peter keeps a big apple pie in the warm oven.",
        "Who would move a piano up the steep path in the rain?",
        "Bees buzz above the pool while the boys eat cheese.",
        "Amber and Paul wave from the far side of the bridge.",
        "Maybe we should buy a few more apples, Tom.",
    ],
    "de": [
        "Die Bienen fliegen über Obst und Butter.",
        "Mama möchte früh Müsli mit Milch.",
        "Peter baut im Mai ein blaues Boot.",
        "Viele Vögel wohnen am Ufer der Mosel.",
        "Papa bringt Brot, Wein und Äpfel mit.",
        "Im Sommer baden wir gern im kühlen Meer.",
        "Fünf müde Bären schlafen unter dem Baum.",
        "Wir fahren morgen mit dem Bus nach Bremen.",
        "Oma kauft Blumen für die Mutter.",
    ],
    "es": [
        "Mi mamá bebe un vaso de agua fría por la mañana.",
        "Pablo compra pan, miel y uvas en el mercado.",
        "Las palomas vuelan sobre el puerto de Lima.",
        "Bueno, vamos a pasear por la playa en verano.",
        "Pepe y Pilar miran la luna sobre el mar.",
        "El abuelo fuma una pipa bajo el olmo.",
        "Mañana visitamos el museo de Bilbao.",
        "Para mí, el café con leche es perfecto.",
        "Mamá pone flores moradas en la mesa.",
    ],
    "zh": [  # Mandarin, pinyin with tone digits
        "ba1ba5 he2 ma1ma5 mai3 le5 mian4bao1 he2 pu2tao5.",
        "wo3men5 ming2tian1 qu4 bei3jing1 pa2 shan1.",
        "pang2bian1 de5 xiao3 pu4bu4 fei1chang2 piao4liang5.",
        "bao3bao5 bu4 pa4 mao1, ta1 xi3huan5 wan2.",
        "lao3 bo2bo5 mei3tian1 pao3bu4 wu3 gong1li3.",
        "fu4qin1 mai3 le5 hen3 duo1 yu2 he2 mi3fan4.",
        "pi2pa5 he2 bo1luo2 dou1 fang4 zai4 pan2zi5 li3.",
        "ni3 ba3 mao4zi5 fang4 zai4 men2 pang2bian1 ba5.",
        "mei4mei5 mai3 le5 wu3 ben3 shu1.",
    ],
}
VOICES: dict[str, list[str]] = {
    "en": ["en+m3", "en-us+f2", "en+m7", "en-gb-x-rp+f4", "en-us+m1", "en+f3", "en-us+m5"],
    "de": ["de+f2", "de+m3", "de+f4", "de+m1", "de+f3", "de+m7", "de+f1"],
    "es": ["es+m1", "es-419+f3", "es+m3", "es-419+f2", "es+f4", "es-419+m2", "es+m5"],
    "zh": ["cmn-latn-pinyin+f3", "cmn-latn-pinyin+m3", "cmn-latn-pinyin+f2",
           "cmn-latn-pinyin+m1", "cmn-latn-pinyin+f4", "cmn-latn-pinyin+m5",
           "cmn-latn-pinyin+f1"],
}
TEXTS["it"] = [
    "Il bambino beve molto latte la mattina.", "Mamma porta una borsa blu al mercato.",
    "Paolo mangia pane e burro con la zuppa.", "Vorrei un piatto di pasta fresca, per favore.",
    "Il papà compra sei mele e un bel melone.", "Bruno vede la luna sopra il porto.",
]
# Voices of other synthesizers (tools/othertts.py), English or Italian text: speech whose
# phone times are exact but whose sound is not espeak's. Which of them the viseme model
# heard in training is up to the model (tools/train_visemes.py --synths); kal and slt are
# never used (they belong to independent checks).
OTHER_VOICES: dict[str, tuple[str, str, str]] = {
    "flite-awb": ("flite", "awb", "en"), "flite-rms": ("flite", "rms", "en"),
    "fest-ked": ("festival", "ked_diphone", "en"), "fest-it": ("festival", "lp_diphone", "it"),
}
LANGS = ["en", "de", "es", "zh"]
ALL_LANGS = LANGS + list(OTHER_VOICES)
QUICK_LANGS = ["en", "zh"]

TARGETS = {
    "close": ("≥0.85", lambda v: v >= 0.85),
    "contr": ("≥2.5", lambda v: v >= 2.5),
    "width": ("≥1.10", lambda v: v >= 1.10),
    "openX": ("≤0.05", lambda v: v <= 0.05),
    "lag": ("0 or +1", lambda v: v in (0, 1)),
    "glitch": ("0", lambda v: v == 0),
    "sharp": ("≥0.9 all", lambda v: v >= 0.9),
    "sharp_m": ("≥0.9 all", lambda v: v >= 0.9),
    "sharp_m_max": ("≤1.2 all", lambda v: v <= 1.2),
}

# ---------------------------------------------------------------------------- phonemes

OPEN = set("aɑæɐɒʌɶ")
MID = set("eɛəɜɞoɔøœɘɵɤɚɝ")
CLOSE = set("iɪyʏuʊɨʉɯᵻ")
VOWELS = OPEN | MID | CLOSE
SPREAD = set("iɪeɛ")
ROUNDED = set("uʊoɔyʏøœɵʉ")
TARGET_LEVEL = {"open": 1.0, "mid": 0.6, "close": 0.35, "bilabial": 0.0, "labiodental": 0.15,
                "consonant": 0.3}


def _clean(label: str) -> str:
    """IPA label without stress, length, tone, diacritics, digits and punctuation."""
    s = unicodedata.normalize("NFD", label)
    return "".join(c for c in s if c.isalpha() and unicodedata.category(c) != "Mn"
                   and c not in "ːˑˈˌʰʲʷ")


def classes(label: str) -> set[str]:
    """The classes of one phoneme (see the module docstring)."""
    s = _clean(label)
    out: set[str] = set()
    if not s:
        return out
    vow = [c for c in s if c in VOWELS]
    if s[0] in "pbm":
        out.add("bilabial")
    elif s[0] in "fvɱ":
        out.add("labiodental")
    elif s[0] in "wʍɥ":
        out.update({"rounded", "consonant"})
    elif s[0] in VOWELS:
        out.add("open" if s[0] in OPEN else "mid" if s[0] in MID else "close")
        if all(c in SPREAD for c in vow):
            out.add("spread")
        if all(c in ROUNDED for c in vow):
            out.add("rounded")
    else:
        out.add("consonant")
    return out


def height_class(cl: set[str]) -> str:
    for k in ("open", "mid", "close", "bilabial", "labiodental"):
        if k in cl:
            return k
    return "consonant"


# ---------------------------------------------------------------------------- speech


def synth_for(lang: str, idx: int, duration: float) -> tuple[Path, list, str]:
    """Speech for clip number ``idx`` lasting about ``duration - SHORTER_S`` s: wav path,
    phones [(start, end, ipa)], voice. Cached."""
    from tools.phonetimed import synth

    if lang in OTHER_VOICES:
        return _other_synth_for(lang, idx, duration)
    voice = VOICES[lang][idx % len(VOICES[lang])]
    d = OUT / "speech"
    stem = f"{lang}_{idx}_{duration:.2f}"
    wav, meta = d / f"{stem}.wav", d / f"{stem}.json"
    if wav.is_file() and meta.is_file():
        m = json.loads(meta.read_text())
        return wav, [tuple(p) for p in m["phones"]], m["voice"]
    target = duration - SHORTER_S
    texts = TEXTS[lang]
    sents: list[str] = []
    k = idx * 2
    est = 0.0
    while est < target * 1.05 or not sents:  # enough sentences at the default rate
        sents.append(texts[k % len(texts)])
        k += 1
        est = synth(" ".join(sents), voice=voice)[0].size / 22050.0
    text = " ".join(sents)
    rate = 160.0
    for _ in range(3):
        audio, sr, phones = synth(text, voice=voice, rate=int(round(rate)))
        length = audio.size / sr
        if target * 0.97 <= length <= target:
            break
        rate = float(np.clip(rate * length / target, 110, 260))
    audio, phones = _crop(audio, sr, phones, target)  # at the last phoneme that ends in time
    return _save_speech(wav, meta, audio, sr, phones, voice, text, rate)


def _crop(audio: np.ndarray, sr: int, phones: list, target: float) -> tuple[np.ndarray, list]:
    """Cut at the last phoneme that ends by ``target`` s, with a 30 ms fade."""
    if audio.size / sr <= target:
        return audio, phones
    end = max((e for s, e, _ in phones if e <= target), default=target)
    phones = [p for p in phones if p[1] <= end]
    n = int(end * sr)
    fade = min(n, int(0.03 * sr))
    audio = audio[:n].copy()
    audio[n - fade :] *= np.linspace(1, 0, fade, dtype=np.float32)
    return audio, phones


def _save_speech(wav: Path, meta: Path, audio: np.ndarray, sr: int, phones: list,
                 voice: str, text: str, rate: float) -> tuple[Path, list, str]:
    wav.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(str(wav), sr, (np.clip(audio, -1, 1) * 32767).astype(np.int16))
    phones = [(round(float(s), 4), round(float(e), 4), lab) for s, e, lab in phones]
    meta.write_text(json.dumps({"voice": voice, "text": text, "rate": rate,
                                "sr": sr, "phones": phones}, ensure_ascii=False))
    return wav, phones, voice


def _other_synth_for(key: str, idx: int, duration: float) -> tuple[Path, list, str]:
    """``synth_for`` with Festival or flite: the speaking rate is set by stretching the
    durations until the speech fills the clip less ``SHORTER_S``."""
    from tools.othertts import festival_batch, flite_synth

    synth, voice, lang = OTHER_VOICES[key]
    d = OUT / "speech"
    stem = f"{key}_{idx}_{duration:.2f}"
    wav, meta = d / f"{stem}.wav", d / f"{stem}.json"
    if wav.is_file() and meta.is_file():
        m = json.loads(meta.read_text())
        return wav, [tuple(p) for p in m["phones"]], m["voice"]

    def say(text: str, stretch: float) -> tuple[np.ndarray, int, list]:
        if synth == "flite":
            return flite_synth(text, voice, stretch=stretch)
        return festival_batch([text], voice, stretch=stretch)[0]

    target = duration - SHORTER_S
    texts = TEXTS[lang]
    sents: list[str] = []
    k = idx * 2
    audio, sr, phones = np.zeros(0, np.float32), 16000, []
    while audio.size / sr < target * 1.05 or not sents:
        sents.append(texts[k % len(texts)])
        k += 1
        audio, sr, phones = say(" ".join(sents), 1.0)
    text = " ".join(sents)
    stretch = 1.0
    for _ in range(3):
        length = audio.size / sr
        if target * 0.97 <= length <= target:
            break
        stretch = float(np.clip(stretch * target / length, 0.6, 1.6))
        audio, sr, phones = say(text, stretch)
    audio, phones = _crop(audio, sr, phones, target)
    return _save_speech(wav, meta, audio, sr, phones, f"{synth}:{voice}", text, stretch)


# ---------------------------------------------------------------------------- alignment

STABLE = [27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45]
SHAPE_PTS = list(range(2, 15)) + list(range(48, 68))
IOD_PX = 48.0


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity transform mapping ``src`` points onto ``dst`` (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    u, sv, vt = np.linalg.svd(d.T @ s)
    sign = np.eye(2)
    if np.linalg.det(u @ vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = float((sv * np.diag(sign)).sum() / max((s**2).sum(), 1e-9))
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - scale * rot @ ms
    return m


@dataclass
class Canon:
    """Canonical face of one clip (the source's median landmarks, IOD 48 px) and its
    lower-face crop box."""

    tpl: np.ndarray
    size: tuple[int, int]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1

    @classmethod
    def of(cls, src_lm: np.ndarray) -> Canon:
        med = np.nanmedian(src_lm, 0).astype(np.float64)
        iod = np.linalg.norm(med[42:48].mean(0) - med[36:42].mean(0))
        tpl = (med - med.min(0)) * (IOD_PX / iod) + 16
        w, h = (tpl.max(0) + 24).astype(int)
        box = (int(tpl[3, 0]), int(tpl[33, 1]), int(tpl[13, 0]), int(tpl[8, 1] + 5))
        return cls(tpl, (int(w), int(h)), box)

    def crop(self, rgb: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Normalised grey lower-face crop and the landmarks in canonical coordinates."""
        if not np.isfinite(lm).all():
            return None
        m = similarity(lm[STABLE].astype(np.float64), self.tpl[STABLE])
        g = cv2.warpAffine(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), m, self.size,
                           flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = self.box
        c = cv2.GaussianBlur(g[y0:y1, x0:x1].astype(np.float32), (0, 0), 1.0)
        c = (c - c.mean()) / max(float(c.std()), 1e-3)
        return c, lm.astype(np.float64) @ m[:, :2].T + m[:, 2]


def lip_sharpness(rgb: np.ndarray, lm: np.ndarray) -> float:
    """Variance of the Laplacian (grey, 3x3) inside the outer-lip polygon."""
    if not np.isfinite(lm).all():
        return float("nan")
    x0, y0 = np.floor(lm[48:60].min(0)).astype(int) - 2
    x1, y1 = np.ceil(lm[48:60].max(0)).astype(int) + 3
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return float("nan")
    g = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(g.astype(np.float32), cv2.CV_32F, ksize=3)
    mask = np.zeros(g.shape, np.uint8)
    cv2.fillPoly(mask, [(lm[48:60] - [x0, y0]).round().astype(np.int32)], 1)
    v = lap[mask > 0]
    return float(v.var()) if v.size > 8 else float("nan")


@dataclass
class Track:
    """Per-frame measurements of one video (source or output)."""

    lm: np.ndarray  # (N, 68, 2)
    crops: list[np.ndarray | None]
    shapes: list[np.ndarray | None]
    sharp: np.ndarray
    misses: int = 0


def track(video: Path, lm: np.ndarray | None, canon: Canon | None,
          x_range: tuple[int, int] | None) -> Track:
    """Landmarks (detected unless given), aligned lower-face crops and lip sharpness."""
    det = Detector() if lm is None else None
    rows, crops, shapes, sharp = [], [], [], []
    for i, rgb in enumerate(frames(video, x_range)):
        p = det(rgb) if det is not None else (lm[i] if i < len(lm) else np.full((68, 2), np.nan))
        rows.append(p)
        sharp.append(lip_sharpness(rgb, p))
        if canon is not None:
            c = canon.crop(rgb, p)
            crops.append(None if c is None else c[0])
            shapes.append(None if c is None else c[1])
    return Track(np.stack(rows), crops, shapes, np.asarray(sharp),
                 det.misses if det is not None else 0)


# ---------------------------------------------------------------------------- glitches


def _stack(crops: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.array([i for i, c in enumerate(crops) if c is not None], int)
    if idx.size == 0:
        return idx, np.zeros((0, 1), np.float32)
    return idx, np.stack([crops[i].ravel() for i in idx]).astype(np.float32)


def _nearest(a: np.ndarray, b: np.ndarray, exclude_same: bool) -> np.ndarray:
    """For each row of ``a``: min over rows of ``b`` of mean |a - b| (not itself if asked)."""
    out = np.empty(len(a))
    for i0 in range(0, len(a), 4):
        d = np.abs(a[i0 : i0 + 4, None, :] - b[None, :, :]).mean(-1)
        if exclude_same:
            for j in range(d.shape[0]):
                d[j, i0 + j] = np.inf
        out[i0 : i0 + 4] = d.min(1)
    return out


def _shape_dev(shapes: list[np.ndarray | None], ref: np.ndarray) -> np.ndarray:
    return np.array([
        np.nan if s is None
        else float(np.sqrt(((s[SHAPE_PTS] - ref[SHAPE_PTS]) ** 2).sum(1).mean()) / IOD_PX)
        for s in shapes
    ])


def _mouth_zone(shapes: list[np.ndarray | None], box: tuple[int, int, int, int],
                shape_hw: tuple[int, int]) -> np.ndarray:
    """Crop pixels any mouth of these frames covers, with room below for the jaw drop."""
    zone = np.zeros(shape_hw, np.uint8)
    x0, y0 = box[0], box[1]
    for sh in shapes:
        if sh is None:
            continue
        lips = sh[48:60] - (x0, y0)
        width = float(np.ptp(lips[:, 0]))
        pts = np.concatenate([lips, lips + (0.0, 0.45 * width)]).astype(np.float32)
        cv2.fillConvexPoly(zone, cv2.convexHull(pts).astype(np.int32), 1)
    r = max(1, int(0.1 * IOD_PX))
    zone = cv2.dilate(zone, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return zone.astype(bool)


def _jumps(idx: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Mean |change| of each crop from the previous frame's (nan when that is missing)."""
    out = np.full(len(idx), np.nan)
    for j in range(1, len(idx)):
        if idx[j] == idx[j - 1] + 1:
            out[j] = float(np.abs(x[j] - x[j - 1]).mean())
    return out


def glitches(src: Track, out: Track, canon: Canon) -> tuple[list[int], dict[str, float]]:
    """Output frames whose lower face jumps or looks beyond anything the source does (see
    the module docstring)."""
    i_s, s = _stack(src.crops)
    i_o, o = _stack(out.crops)
    if len(i_s) == 0:
        return [], {}
    hw = next(c.shape for c in src.crops if c is not None)
    keep = ~_mouth_zone(src.shapes + out.shapes, canon.box, hw).ravel()

    def away(x: np.ndarray) -> np.ndarray:
        v = x[:, keep]
        return (v - v.mean(1, keepdims=True)) / np.maximum(v.std(1, keepdims=True), 1e-3)

    s_away, o_away = away(s), away(o)
    nov_src = _nearest(s_away, s_away, True) if len(s) > 1 else np.zeros(1)
    nov_out = _nearest(o_away, s_away, False) if len(o) else np.zeros(0)
    jump_src, jump_out = _jumps(i_s, s), _jumps(i_o, o)
    # The source's own 95th percentile, not its maximum: a source has odd frames of its
    # own (blur, a blink), and the maximum would let any output frame as odd as those pass.
    # Never below NOVELTY_FLOOR: on a nearly static source 1.4x its p95 is a few grey
    # levels, which no viewer sees (infinitetalk: 0.16, d20: 0.085).
    thr = max(NOVELTY_MARGIN * float(np.percentile(nov_src, 95)), NOVELTY_FLOOR)
    j_thr = GLITCH_MARGIN * float(np.nanmax(jump_src))
    ref = np.nanmedian(np.stack([x for x in src.shapes if x is not None]), 0)
    sh_src, sh_out = _shape_dev(src.shapes, ref), _shape_dev(out.shapes, ref)
    sh_thr = GLITCH_MARGIN * float(np.nanmax(sh_src))
    bad = {int(i) for i, v in zip(i_o, nov_out, strict=True) if v > thr}
    bad |= {int(i) for i, v in zip(i_o, jump_out, strict=True) if v > j_thr}
    n = min(len(src.shapes), len(out.shapes))
    for k in range(n):
        if src.shapes[k] is None:
            continue
        if out.shapes[k] is None or sh_out[k] > sh_thr:
            bad.add(k)
    return sorted(bad), {
        "nov_src_max": float(nov_src.max()),
        "nov_thr": thr,
        "nov_out_max": float(nov_out.max()) if nov_out.size else float("nan"),
        "jump_src_max": float(np.nanmax(jump_src)),
        "jump_out_max": float(np.nanmax(jump_out)) if np.isfinite(jump_out).any()
        else float("nan"),
        "shape_src_max": float(np.nanmax(sh_src)),
        "shape_out_max": float(np.nanmax(sh_out[:n])) if n else float("nan"),
    }


# ---------------------------------------------------------------------------- articulation


def frame_sets(phones: list, fps: float, n: int) -> list[tuple[set[str], np.ndarray, np.ndarray]]:
    """Per phoneme: classes, covered frame indices, core frame indices."""
    t = np.arange(n) / fps
    h = 0.5 / fps
    out = []
    for s, e, lab in phones:
        cov = np.nonzero((t >= s - h) & (t <= e + h))[0]
        core = np.nonzero((t >= s) & (t < e))[0]
        if core.size == 0:
            core = np.array([int(round((s + e) / 2 * fps))])
        core = core[core < n]
        out.append((classes(lab), cov, core))
    return out


def target_curve(phones: list, fps: float, n: int) -> np.ndarray:
    ms = np.zeros(int(np.ceil((n + 1) / fps * 1000)) + 1)
    for s, e, lab in phones:
        ms[int(round(s * 1000)) : int(round(e * 1000))] = TARGET_LEVEL[height_class(classes(lab))]
    tgt = np.zeros(n)
    for k in range(n):
        a = max(int(round((k - 0.5) / fps * 1000)), 0)
        tgt[k] = ms[a : int(round((k + 0.5) / fps * 1000))].mean()
    return tgt


def articulation(opening: np.ndarray, width: np.ndarray, phones: list, fps: float,
                 thr: float, covered: np.ndarray) -> dict[str, float]:
    n = opening.size
    sets = frame_sets(phones, fps, n)

    def frames_of(cls: str, core: bool = True) -> np.ndarray:
        idx = [c if core else v for cl, v, c in sets if cls in cl]
        return np.unique(np.concatenate(idx)) if idx else np.zeros(0, int)

    def per_phone(cls: str, fn) -> list[float]:  # type: ignore[no-untyped-def]
        vals = []
        for cl, cov, _ in sets:
            if cls in cl:
                v = opening[cov]
                v = v[np.isfinite(v)]
                if v.size:
                    vals.append(fn(v))
        return vals

    def med(x: np.ndarray, idx: np.ndarray) -> float:
        v = x[idx]
        v = v[np.isfinite(v)]
        return float(np.median(v)) if v.size else float("nan")

    bil_min = per_phone("bilabial", np.min)
    open_max = per_phone("open", np.max)
    tgt = target_curve(phones, fps, n)
    sel = covered & np.isfinite(opening)
    o = np.where(sel, opening, np.nan)
    t = np.where(covered, tgt, np.nan)
    best, arg = -2.0, 0
    for lag in range(-MAX_LAG, MAX_LAG + 1):
        r = lag_r(o, t, lag)
        if np.isfinite(r) and r > best:
            best, arg = r, lag
    rounded = med(width, frames_of("rounded"))
    return {
        "close": float(np.mean(np.asarray(bil_min) < thr)) if bil_min else float("nan"),
        "contr": med(opening, frames_of("open")) / max(med(opening, frames_of("bilabial")), 0.02),
        "width": med(width, frames_of("spread")) / rounded if rounded > 0 else float("nan"),
        "openX": float(np.mean(np.asarray(open_max) < thr)) if open_max else float("nan"),
        "lag": float(arg),
        "r": float(best) if best > -2 else float("nan"),
        "n_bilabial": float(len(bil_min)),
        "n_open": float(len(open_max)),
        "n_spread": float(sum("spread" in cl for cl, _, _ in sets)),
        "n_rounded": float(sum("rounded" in cl for cl, _, _ in sets)),
    }


# ---------------------------------------------------------------------------- per clip


def run_sync(video: Path, x_range: tuple[int, int] | None, audio: Path, out: Path,
             start_ms: float, end_ms: float, insert_ms: float) -> float:
    """Identify, then dub the first face, or the one whose nose is within ``x_range``."""
    t0 = time.perf_counter()
    s = lipdub.identify(video)
    face_id = s.faces[0].face_id
    if x_range is not None:
        face_id = next(f.face_id for f in s.faces
                       if x_range[0] <= float(np.median(f.track.landmarks[:, 30, 0])) < x_range[1])
    lipdub.sync(
        video,
        [lipdub.FaceAudio(face_id, audio, start_ms=start_ms, end_ms=end_ms,
                          insert_ms=insert_ms)],
        out_path=out,
        session=s,
        original_volume=0.0,
    )
    return time.perf_counter() - t0


@dataclass
class Source:
    """Everything measured once per clip on the untouched source."""

    video: Path
    fps: float
    track: Track
    canon: Canon
    thr: float  # half the speaking median opening
    x_range: tuple[int, int] | None


def load_source(video: Path, x_range: tuple[int, int] | None = None) -> Source:
    fps = fps_of(video)
    lm = source_landmarks(video, LM_CACHE, x_range)
    canon = Canon.of(lm)
    tr = track(video, lm, canon, x_range)
    n = lm.shape[0]
    opening = mouth_opening(lm)
    own = read_video_audio(video, SR, 1)
    sp = speaking(speech_loudness(to_mono(own), SR, fps, n)) if own is not None else None
    sp = np.ones(n, bool) if sp is None else sp
    v = opening[sp & np.isfinite(opening)]
    return Source(video, fps, tr, canon, 0.5 * float(np.median(v)), x_range)


def matched_sharpness(out: Track, src: Track, covered: np.ndarray, k: int = 5) -> float:
    """Output lip sharpness / the source's on the source frames whose mouth is opened as
    far (the ``k`` nearest in opening, anywhere in the clip). Frame by frame (``sharp``)
    a dub's closed lips are set against whatever the source's mouth showed at that
    instant: teeth and a dark mouth line have far more Laplacian energy than lips alone,
    so a source that talks with its teeth showing reads the dub soft, however matched
    the texture is."""
    m = min(len(out.sharp), len(src.sharp), covered.size)
    o_open, s_open = mouth_opening(out.lm[:m]), mouth_opening(src.lm)
    ok_s = np.isfinite(src.sharp) & np.isfinite(s_open)
    if ok_s.sum() < k:
        return float("nan")
    so, ss = s_open[ok_s], src.sharp[ok_s]
    num, den = [], []
    for i in np.flatnonzero(covered[:m] & np.isfinite(out.sharp[:m]) & np.isfinite(o_open)):
        j = np.argpartition(np.abs(so - o_open[i]), k - 1)[:k]
        num.append(out.sharp[i])
        den.append(ss[j].mean())
    return float(np.mean(num) / np.mean(den)) if num else float("nan")


def measure_output(src: Source, out: Path, covered: np.ndarray) -> tuple[Track, dict]:
    tr = track(out, None, src.canon, src.x_range)
    bad, info = glitches(src.track, tr, src.canon)
    m = min(len(src.track.sharp), len(tr.sharp), covered.size)
    a, b = tr.sharp[:m][covered[:m]], src.track.sharp[:m][covered[:m]]
    ok = np.isfinite(a) & np.isfinite(b)
    sharp = float(a[ok].mean() / b[ok].mean()) if ok.sum() else float("nan")
    sharp_m = matched_sharpness(tr, src.track, covered[:m])
    return tr, {"glitch": float(len(bad)), "glitch_frames": bad, "sharp": sharp,
                "sharp_m": sharp_m,
                "misses": float(tr.misses), "out_frames": float(len(tr.sharp)), **info}


def evaluate(src: Source, idx: int, lang: str, reuse: bool) -> tuple[dict, dict]:
    video = src.video
    n = src.track.lm.shape[0]
    wav, phones, voice = synth_for(lang, idx, n / src.fps)
    sr, pcm = wavfile.read(str(wav))
    if CLOSURE_LABELS and lang not in OTHER_VOICES:
        from tools.phonetimed import with_closures

        phones = with_closures(pcm.astype(np.float32), sr, phones)
    dur = pcm.size / sr
    out = OUT / f"{video.stem}.{lang}{TAG}.mp4"
    t_sync = float("nan")
    if not (reuse and out.is_file()):
        t_sync = run_sync(video, None, wav, out, 0.0, np.floor(dur * 1000) - 1, 0.0)
    covered = np.arange(n) / src.fps < dur
    tr, row = measure_output(src, out, covered)
    op = np.full(n, np.nan)
    wd = np.full(n, np.nan)
    m = min(n, tr.lm.shape[0])
    op[:m], wd[:m] = mouth_opening(tr.lm[:m]), mouth_width(tr.lm[:m])
    row.update(articulation(op, wd, phones, src.fps, src.thr, covered))
    row.update({"voice": voice, "t_sync": t_sync, "dur": dur, "thr": src.thr})
    ref = articulation(mouth_opening(src.track.lm), mouth_width(src.track.lm), phones,
                       src.fps, src.thr, covered)
    ref.update({"glitch": 0.0, "sharp": 1.0, "sharp_m": 1.0})
    return row, ref


def evaluate_vasp(reuse: bool) -> dict:
    name, audio, xr = VASP
    src = load_source(MEDIA / name, xr)
    out = OUT / f"vasp{TAG}.mp4"
    t_sync = float("nan")
    if not (reuse and out.is_file()):
        t_sync = run_sync(MEDIA / name, xr, MEDIA / audio, out, 0.0, 3000.0, 1000.0)
    n = src.track.lm.shape[0]
    t = np.arange(n) / src.fps
    covered = (t >= 1.0) & (t < 4.0)
    _, row = measure_output(src, out, covered)
    # The untouched source through the same check: must give no glitch.
    bad_src, _ = glitches(src.track, src.track, src.canon)
    row.update({"t_sync": t_sync, "glitch_src": float(len(bad_src))})
    return row


# ---------------------------------------------------------------------------- report


def engine_version() -> str:
    """Where the measured engine was imported from, its commit and local edits."""
    src = Path(lipdub.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=src,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=src,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return str(src)
    return f"{src} at {head or '?'}" + (" + local edits" if dirty else "")


def fmt(v: float, spec: str) -> str:
    w = int(spec.split(".")[0])
    return f"{v:{spec}}" if isinstance(v, float | int) and np.isfinite(v) else f"{'-':>{w}}"


COLS = [("close", "6.2f"), ("contr", "6.2f"), ("width", "6.2f"), ("openX", "6.2f"),
        ("lag", "4.0f"), ("r", "5.2f")]


def short(name: str) -> str:
    return name.split("__")[-1].rsplit(".", 1)[0]


def nanmean(v: list[float]) -> float:
    a = np.asarray(v, float)
    return float(a[np.isfinite(a)].mean()) if np.isfinite(a).any() else float("nan")


def report(rows: list[dict], vasp: dict | None) -> dict:
    head = (f"{'clip':16} {'lang':4} {'voice':20} {'nB':>3}"
            + "".join(f" {k:>{int(s.split('.')[0])}}" for k, s in COLS)
            + f" {'glitch':>6} {'sharp':>6} {'sharpM':>6} |" + "".join(
                f" {k:>{int(s.split('.')[0])}}" for k, s in COLS))
    print()
    print(" " * 46 + "output (dubbed)" + " " * 35 + "| source with the new phonemes (chance)")
    print("(mean rows: means over the rows above, glitch = their sum)")
    print(head)
    print("-" * len(head))

    def line(label: str, lang: str, voice: str, nb: str, o: dict, s: dict) -> str:
        return (f"{label[:16]:16} {lang:4} {voice[:20]:20} {nb:>3}"
                + "".join(f" {fmt(o.get(k, np.nan), sp)}" for k, sp in COLS)
                + f" {fmt(o.get('glitch', np.nan), '6.0f')} {fmt(o.get('sharp', np.nan), '6.2f')}"
                + f" {fmt(o.get('sharp_m', np.nan), '6.2f')}"
                + " |" + "".join(f" {fmt(s.get(k, np.nan), sp)}" for k, sp in COLS))

    keys = [k for k, _ in COLS] + ["glitch", "sharp", "sharp_m"]
    clips = list(dict.fromkeys(r["clip"] for r in rows))
    for c in clips:
        rs = [r for r in rows if r["clip"] == c]
        for r in rs:
            print(line(short(c), r["lang"], r["out"]["voice"],
                       f"{int(r['out']['n_bilabial'])}", r["out"], r["src"]))
        if len(rs) > 1:
            mo = {k: nanmean([r["out"][k] for r in rs]) for k in keys}
            ms = {k: nanmean([r["src"][k] for r in rs]) for k in keys}
            mo["glitch"] = float(sum(r["out"]["glitch"] for r in rs))
            print(line("  mean", "", "", "", mo, ms))
    print("-" * len(head))
    mean_o = {k: nanmean([r["out"][k] for r in rows]) for k in keys}
    mean_s = {k: nanmean([r["src"][k] for r in rows]) for k in keys}
    mean_o["glitch"] = float(sum(r["out"]["glitch"] for r in rows))
    if rows:
        print(line("MEAN", "", "", "", mean_o, mean_s))
    for lang in dict.fromkeys(r["lang"] for r in rows):
        rs = [r for r in rows if r["lang"] == lang]
        mo = {k: nanmean([r["out"][k] for r in rs]) for k in keys}
        ms = {k: nanmean([r["src"][k] for r in rs]) for k in keys}
        mo["glitch"] = float(sum(r["out"]["glitch"] for r in rs))
        print(line(f"  mean {lang}", "", "", "", mo, ms))
    if vasp is not None:
        print(f"\nvasp middle face: glitch frames {vasp['glitch_frames']} "
              f"(untouched source: {int(vasp['glitch_src'])}), sharpness {vasp['sharp']:.2f} "
              f"(same opening {vasp.get('sharp_m', np.nan):.2f}), "
              f"novelty max {vasp['nov_out_max']:.3f} vs source {vasp['nov_src_max']:.3f}")
    glitch_total = mean_o["glitch"] + (vasp["glitch"] if vasp else 0.0)
    sharp_all = [r["out"]["sharp"] for r in rows] + ([vasp["sharp"]] if vasp else [])
    sharp_m_all = [r["out"].get("sharp_m", np.nan) for r in rows] + (
        [vasp.get("sharp_m", np.nan)] if vasp else [])
    lags = [int(r["out"]["lag"]) for r in rows]
    print(f"\n{'target':34} {'value':>9} {'target':>9}  result")
    checks = [
        ("close", "bilabial closure rate (mean)", mean_o["close"]),
        ("contr", "open / bilabial opening (mean)", mean_o["contr"]),
        ("width", "spread / rounded width (mean)", mean_o["width"]),
        ("openX", "open vowels rendered closed", mean_o["openX"]),
        ("lag", "best lag (median over rows)", float(np.median(lags)) if lags else np.nan),
        ("glitch", "glitch frames (all + vasp)", glitch_total),
        ("sharp", "mouth sharpness (min)", float(np.nanmin(sharp_all)) if sharp_all else np.nan),
        ("sharp_m", "sharpness, same opening (min)",
         float(np.nanmin(sharp_m_all)) if np.isfinite(sharp_m_all).any() else np.nan),
        ("sharp_m_max", "sharpness, same opening (max)",
         float(np.nanmax(sharp_m_all)) if np.isfinite(sharp_m_all).any() else np.nan),
    ]
    for key, label, v in checks:
        tgt, ok = TARGETS[key]
        res = "-" if not np.isfinite(v) else "PASS" if ok(v) else "FAIL"
        print(f"{label:34} {fmt(v, '9.2f')} {tgt:>9}  {res}")
    if lags:
        print(f"{'':34} lags per row {min(lags)}..{max(lags)}")
    return {"mean": mean_o, "mean_src": mean_s, "glitch_total": glitch_total}


def _jsonable(x):  # type: ignore[no-untyped-def]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 clips x 2 languages (en, zh)")
    ap.add_argument("--clips", help="comma-separated substrings of clip names")
    ap.add_argument("--langs", help=f"comma-separated, of {','.join(ALL_LANGS)} "
                    "(the last ones: other synthesizers' voices)")
    ap.add_argument("--no-vasp", action="store_true", help="skip the vasp glitch case")
    ap.add_argument("--reuse", action="store_true", help="measure existing outputs again")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--tag", default="", help="cache outputs under this tag (another engine)")
    ap.add_argument("--viseme-weights", type=Path,
                    help="dub with this viseme model (e.g. one trained without a synthesizer)")
    ap.add_argument("--closure-labels", action="store_true",
                    help="read espeak's stops from their closure, not their release")
    args = ap.parse_args()
    if args.viseme_weights:
        from lipdub.speech.visemes import use_weights

        use_weights(str(args.viseme_weights))
    global TAG, CLOSURE_LABELS
    TAG = f".{args.tag}" if args.tag else ""
    CLOSURE_LABELS = args.closure_labels

    clips = [(i, c[0]) for i, c in enumerate(CLIPS)]
    langs = QUICK_LANGS if args.quick else LANGS
    if args.quick:
        clips = [c for c in clips if c[1] in QUICK]
    if args.clips:
        keys = [k.strip() for k in args.clips.split(",") if k.strip()]
        clips = [c for c in clips if any(k in c[1] for k in keys)]
    if args.langs:
        langs = [x.strip() for x in args.langs.split(",") if x.strip()]
        unknown = set(langs) - set(ALL_LANGS)
        if unknown:
            ap.error(f"unknown languages {sorted(unknown)}; have {ALL_LANGS}")
    OUT.mkdir(parents=True, exist_ok=True)
    version = engine_version()
    print(f"engine: {version}")
    t0 = time.perf_counter()
    rows: list[dict] = []
    for idx, name in clips:
        src = load_source(MEDIA / name)
        for lang in langs:
            print(f"[{time.perf_counter() - t0:6.0f}s] {name} <- {lang}", flush=True)
            o, s = evaluate(src, idx, lang, args.reuse)
            rows.append({"clip": name, "lang": lang, "out": o, "src": s})
    vasp = None
    if not args.no_vasp:
        print(f"[{time.perf_counter() - t0:6.0f}s] vasp middle face", flush=True)
        vasp = evaluate_vasp(args.reuse)
    summary = report(rows, vasp)
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_jsonable(
            {"engine": version, "total_s": total, "rows": rows, "vasp": vasp, **summary}),
            indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
