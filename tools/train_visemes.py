"""Train the viseme model shipped as ``src/lipdub/speech/viseme_mlp.npz``.

    make bench-deps                          # scikit-learn, Festival and flite voices
    .venv/bin/python tools/train_visemes.py --cache /work/models/corpus.npz
    # validation: leave a synthesizer or voices out, read them in tools/eval_visemes.py
    .venv/bin/python tools/train_visemes.py --cache /work/models/corpus.npz \
        --synths espeak,festival --leave-out festival:ked_diphone --out ho.npz

The corpus (5,000 utterances, ~1.3 GB as float16) takes 4-6 min on 2 cores; 12 epochs
of training about as long again. Training the same recipe twice gives models that differ
in their random draws: the shipped file is one such draw. ``--members K`` trains K
models and merges them into one wider MLP (``merged``: their mean logits, or with
``--merge posteriors`` the mean of their softmaxes), an ensemble, in the same file
format; validated but not shipped yet (docs/benchmarks.md, fifth to seventh passes).

Data: phoneme-timed speech from espeak-ng (``phonetimed.synth``) in the training
languages below, and from Festival's and flite's voices (``othertts``: kal and slt are
never used, independent checks measure lipdub on them), from sentences plus random
pseudo-words built from each language's own spelling (broad phoneme coverage in every
context), with random voices, rates and pitches. German, Spanish and Vietnamese are held
out (``HELD_OUT``): they are what bench/articulation.py dubs with, so its figures are on
languages the model never heard. Each utterance is augmented (noise at 5-40 dB SNR,
synthetic room reverberation, random equalisation and telephone band limits, level
changes) so the model relies on what survives a real microphone, not on the
synthesiser's clean signal.

Labels: every 10 ms frame gets the viseme class of the phoneme it falls in
(``viseme_of``); diphthongs are split into their vowels; gaps are silence.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from scipy.linalg import block_diag
from scipy.signal import butter, fftconvolve, lfilter, sosfilt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lipdub.speech import visemes as V  # noqa: E402
from phonetimed import synth as synth_espeak  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "lipdub" / "speech" / "viseme_mlp.npz"
HELD_OUT = ("de", "es", "vi")  # espeak-ng languages kept out of training

# Language: (espeak voice, letters for pseudo-words (consonants, vowels), sentences).
LANGS: dict[str, tuple[str, str, str, list[str]]] = {
    "en-us": ("en-us", "bcdfghjklmnprstvwyz", "aeiou", [
        "Mama made a bubbly pumpkin pie for Bob.", "Who would move the blue boots to the moon?",
        "Please keep the sheep in the deep green field.", "Five very fine violins were found.",
        "My father bought a map of the whole world.", "The oboe player wore a woolen robe.",
    ]),
    "en": ("en", "bcdfghjklmnprstvwyz", "aeiou", [
        "Peter picked a peck of pickled peppers.", "We were woken by the wind in the woods.",
        "The baby bumped into the big blue ball.", "I think it is about time we went home.",
    ]),
    "fr": ("fr", "bcdfgjlmnprstvz", "aeiouéèy", [
        "Le bébé boit du lait avec sa maman.", "Où est le bouquet de fleurs bleues?",
        "Pierre a mis un pull vert pour sortir.", "Je voudrais un peu plus de pain, merci.",
    ]),
    "it": ("it", "bcdfglmnprstvz", "aeiou", [
        "Il bambino mangia una pesca matura.", "Buongiorno, come va oggi la mamma?",
        "Vorrei un bicchiere di vino rosso.", "Paolo porta il pane fresco a casa.",
    ]),
    "pt": ("pt", "bcdfgjlmnprstvz", "aeiouãõ", [
        "O menino bebe um copo de leite.", "Minha mãe mora perto da praia.",
        "Boa tarde, posso pagar com cartão?", "O povo vive bem no pequeno vilarejo.",
    ]),
    "nl": ("nl", "bdfghjklmnprstvwz", "aeiouy", [
        "Mijn moeder bakt brood met boter.", "De boot vaart over de brede rivier.",
        "Wij willen vandaag een fiets kopen.", "Papa leest een boek in de tuin.",
    ]),
    "pl": ("pl", "bcdfghjklmnprstwz", "aeiouy", [
        "Mama kupiła babci bukiet kwiatów.", "Pociąg przyjechał punktualnie na peron.",
        "Woda w morzu była bardzo zimna.", "Bardzo proszę o pomoc.",
    ]),
    "sv": ("sv", "bdfghjklmnprstv", "aeiouyåäö", [
        "Mamma bakar bullar på morgonen.", "Vi ska åka buss till byn.",
        "Pojken spelar boll med sin bror.", "Det blåser mycket på ön i dag.",
    ]),
    "cs": ("cs", "bcdfghjklmnprstvz", "aeiouy", [
        "Maminka peče buchty pro babičku.", "Pes běží po mokré louce.",
        "Vlak přijede v pět hodin.", "Bratr koupil nové boty.",
    ]),
    "id": ("id", "bcdfghjklmnprstwy", "aeiou", [
        "Ibu membeli buah mangga di pasar.", "Bapak pergi bekerja pagi-pagi.",
        "Mobil biru itu milik paman saya.", "Kami makan bubur ayam bersama.",
    ]),
    "tr": ("tr", "bcdfghjklmnprstvyz", "aeıioöuü", [
        "Babam bana mavi bir bisiklet aldı.", "Bu akşam balık yiyelim mi?",
        "Öğretmen öğrencilere bir kitap verdi.", "Bütün gün yağmur yağdı.",
    ]),
    "fi": ("fi", "dhjklmnprstv", "aeiouyäö", [
        "Äiti leipoo pullaa lapsille.", "Mummo puhuu puhelimessa.",
        "Pojat pelaavat jalkapalloa puistossa.", "Bussi tulee pian pysäkille.",
    ]),
    "cmn": ("cmn", "", "", [
        "ma1 ma0 mai3 le0 mian4 bao1", "wo3 men0 bu2 yao4 pao3 bu4", "ni3 hao3 peng2 you3",
        "ba4 ba0 mai3 le0 yi4 ben3 shu1", "fei1 ji1 fei1 de0 hen3 kuai4",
        "wu3 yue4 de0 yu3 hen3 duo1", "mei3 tian1 dou1 he1 niu2 nai3",
    ]),
    "sw": ("sw", "bdfghjklmnprstvwyz", "aeiou", [
        "Mama anapika chakula kitamu.", "Baba amenunua mboga sokoni.",
        "Watoto wanacheza mpira uwanjani.", "Mvua imenyesha usiku wote.",
    ]),
    "hi": ("hi", "", "", [
        "मेरा नाम राम है।", "बाबा बाज़ार से फल लाए।", "माँ ने मुझे पानी दिया।", "हम पुस्तक पढ़ते हैं।",
    ]),
    "ru": ("ru", "", "", [
        "Мама мыла раму.", "Папа купил большую булку.", "Вова пошёл в школу утром.",
        "Мы будем пить чай с молоком.", "Бабушка варит вкусный борщ.",
        "Поезд опоздал на пять минут.", "Утром мы пойдём в парк гулять.",
        "Мой брат любит синюю машину.",
    ]),
    "ca": ("ca", "bcdfglmnprstvx", "aeiouàèéòó", [
        "El meu pare beu vi blanc.", "La mare compra pomes al mercat.",
        "Bon dia, com estàs avui?", "Vull un got d'aigua, si us plau.",
        "El nen juga a pilota amb el seu amic.", "Plou molt a la muntanya.",
    ]),
}
PINYIN = " ".join([
    "ba bo bi bu pa po pi pu ma mo mi mu mei mao fa fo fu fei wa wo wu wei wan",
    "da de di du ta te ti tu na ne ni nu la le li lu lü nü ga ge gu ka ke ku ha he",
    "hu ji qi xi ju qu xu zhi chi shi zha cha sha zi ci si za ca sa ya ye yi yu yue",
    "an en ang ong ai ao ou er bian pian mian dian tian nian jian qian xian",
]).split()
VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3",
            "+f4", "+f5", "+klatt", "+klatt2", "+klatt3", "+klatt4", "+croak", "+Andy",
            "+Annie", "+max", "+john", "+linda", "+edward", "+belinda", "+david"]


# ---------------------------------------------------------------------------- labels

_BILABIAL = set("pbmɓʙɸβ")
_LABIODENTAL = set("fvɱʋ")
_ROUND = set("uʊyʏwɥʉoɔøœɒɵɞ")
_SPREAD = set("iɪeɨɯj")
_OPEN = set("aɑæɐɶä")
_MID = set("əɛɜʌɘɤɚɝ")
_VOWELS = _ROUND | _SPREAD | _OPEN | _MID


def _bases(label: str) -> list[str]:
    """The base letters of an IPA label (length, stress, tone and diacritics dropped)."""
    s = unicodedata.normalize("NFD", label)
    return [ch for ch in s if unicodedata.category(ch).startswith("L")
            and ch not in "ʰʲʷˠˤʼ"]


def _class_of(ch: str) -> int:
    if ch in _BILABIAL:
        return V.BILABIAL
    if ch in _LABIODENTAL:
        return V.LABIODENTAL
    if ch == "w" or ch in _ROUND:
        return V.ROUND
    if ch in _SPREAD:
        return V.SPREAD
    if ch in _OPEN:
        return V.OPEN
    if ch in _MID:
        return V.MID
    return V.CONS


def viseme_of(label: str) -> list[int]:
    """Viseme classes for one phoneme label, in order (several for a diphthong)."""
    b = _bases(label)
    if not b:
        return [V.CONS]
    vowels = [c for c in b if c in _VOWELS]
    if len(vowels) >= 2:
        return [_class_of(c) for c in vowels]
    if vowels and len(b) == 1:
        return [_class_of(b[0])]
    if any(c in _BILABIAL for c in b) and not vowels:
        return [V.BILABIAL]
    if vowels:  # a syllabic consonant with a vowel letter, e.g. 'ɚ' forms
        return [_class_of(vowels[0])]
    return [_class_of(b[0])]


def frame_labels(phones: list[tuple[float, float, str]], n_frames: int) -> np.ndarray:
    y = np.full(n_frames, V.SIL, np.int64)
    for a, b, lab in phones:
        if lab.startswith("("):  # a language-switch marker, e.g. "(en)", not a sound
            continue
        cls = viseme_of(lab)
        edges = np.linspace(a, b, len(cls) + 1)
        for k, c in enumerate(cls):
            i0 = int(round(edges[k] * 100))
            i1 = max(int(round(edges[k + 1] * 100)), i0 + 1)
            y[i0:min(i1, n_frames)] = c
    return y


# ---------------------------------------------------------------------------- corpus


def _pseudo_words(rng: np.random.Generator, cons: str, vows: str, n: int) -> str:
    words = []
    for _ in range(n):
        syl = []
        for _ in range(int(rng.integers(1, 4))):
            s = ""
            if rng.random() < 0.85:
                s += cons[int(rng.integers(len(cons)))]
            s += vows[int(rng.integers(len(vows)))]
            if rng.random() < 0.2:
                s += cons[int(rng.integers(len(cons)))]
            syl.append(s)
        words.append("".join(syl))
    return " ".join(words) + "."


@dataclass
class Recipe:
    """Corpus options that are not the shipped recipe (docs/benchmarks.md, sixth pass),
    set from the command line. Neither made a better model yet."""

    # --short-share: utterances that are one or two words on their own (a dub is
    # sometimes just that, "Bob!", and such a recording is normalised by its own frames).
    short_share: float = 0.0
    # --espeak-closures: espeak's stops labelled from their silent closure, as Festival
    # and flite label them (phonetimed.with_closures).
    espeak_closures: bool = False
    # --extra-voices: Festival's voices the shipped model never heard join the corpus
    # (othertts.EXTRA_FESTIVAL_VOICES), sharing Festival's part of it.
    extra_voices: bool = False


RECIPE = Recipe()


def _short_text(rng: np.random.Generator, lang: str) -> str:
    """One or two words: pseudo-words of the language's letters, or words of its sentences
    (scripts without pseudo-word letters), or pinyin syllables."""
    _, cons, vows, sentences = LANGS[lang]
    k = int(rng.integers(1, 3))
    if lang == "cmn":
        return " ".join(PINYIN[int(rng.integers(len(PINYIN)))] + str(int(rng.integers(1, 5)))
                        for _ in range(k))
    if cons and rng.random() < 0.6:
        return _pseudo_words(rng, cons, vows, k)
    words = sentences[int(rng.integers(len(sentences)))].rstrip(".!?。।").split()
    i = int(rng.integers(max(len(words) - k + 1, 1)))
    return " ".join(words[i : i + k]) + "."


def _text(rng: np.random.Generator, lang: str) -> str:
    _, cons, vows, sentences = LANGS[lang]
    # No draw at share 0: the shipped recipe's corpus stays the one it was.
    if RECIPE.short_share and rng.random() < RECIPE.short_share:
        return _short_text(rng, lang)
    if lang == "cmn":
        k = int(rng.integers(4, 10))
        return " ".join(PINYIN[int(rng.integers(len(PINYIN)))] + str(int(rng.integers(1, 5)))
                        for _ in range(k))
    if not cons or rng.random() < 0.4:
        picks = rng.choice(len(sentences), size=min(2, len(sentences)), replace=False)
        return " ".join(sentences[int(i)] for i in picks)
    return _pseudo_words(rng, cons, vows, int(rng.integers(3, 8)))


def _augment(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    y = x.astype(np.float64)
    if rng.random() < 0.5:  # room: exponentially decaying noise tail
        rt60 = rng.uniform(0.08, 0.6)
        n = int(rt60 * sr)
        t = np.arange(n) / sr
        rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
        rir[0] = 1.0 / max(rng.uniform(0.05, 0.5), 1e-3)
        y = fftconvolve(y, rir)[: y.size]
    if rng.random() < 0.6:  # microphone / channel colouring
        a = rng.uniform(-0.9, 0.9)
        if rng.random() < 0.5:
            y = lfilter([1.0, -a], [1.0], y)
        else:
            y = lfilter([1.0], [1.0, -a * 0.8], y)
    if rng.random() < 0.15:  # telephone band
        sos = butter(4, [300 / (sr / 2), min(3400 / (sr / 2), 0.99)], btype="band", output="sos")
        y = sosfilt(sos, y)
    y = y / (np.sqrt(np.mean(y**2)) + 1e-9) * 0.1
    if rng.random() < 0.8:
        snr = rng.uniform(5, 40)
        noise = rng.standard_normal(y.size)
        if rng.random() < 0.5:  # pink-ish
            noise = lfilter([1.0], [1.0, -0.97], noise)
        noise *= np.sqrt(np.mean(y**2)) / (np.sqrt(np.mean(noise**2)) + 1e-9) / 10 ** (snr / 20)
        y = y + noise
    y *= 10 ** (rng.uniform(-30, 6) / 20)
    return y.astype(np.float32)


SYNTHS = ("espeak", "festival", "flite")
# Shares of the utterances per synthesizer when all three are used. Festival brings six
# languages and three kinds of synthesis (diphone, cluster units, HTS); flite two
# English voices, so it gets the smallest share and the most voice variation.
SHARES = {"espeak": 0.45, "festival": 0.35, "flite": 0.2}
_FESTIVAL_BATCH = 24  # utterances per Festival process (its start-up is ~0.3 s)


def _counts(synths: list[str], n: int) -> np.ndarray:
    """Utterances per synthesizer: ``SHARES`` renormalised over ``synths``, summing to n."""
    w = np.array([SHARES[s] for s in synths])
    counts = np.floor(w / w.sum() * n).astype(int)
    counts[0] += n - counts.sum()
    return counts


def _festival_text(rng: np.random.Generator, lang: str) -> str:
    return _text(rng, "en" if lang == "en" else lang)


Utterance = tuple[np.ndarray, int, list, str]  # audio, rate, phones, voice key
VTLP = (0.88, 1.12)  # range of the tract-length factor (corpus)


def _espeak_job(text: str, voice: str, lang: str, rate: int, pitch: int,
                pitch_range: int) -> list[Utterance]:
    closures = RECIPE.espeak_closures
    try:
        u = synth_espeak(text, voice, rate=rate, pitch=pitch, pitch_range=pitch_range,
                         closures=closures)
    except ValueError:  # a variant this espeak-ng lacks
        u = synth_espeak(text, LANGS[lang][0], closures=closures)
    return [(*u, "espeak")]


def _speak(rng: np.random.Generator, synths: list[str], langs: list[str],
           n: int) -> list[Utterance]:
    """``n`` phone-timed utterances from the chosen synthesizers (shares renormalised),
    each with its voice key ("espeak", "flite:awb", "festival:ked_diphone"...). Every
    random choice is drawn here, in order, so the corpus is the same whatever the number
    of synthesizer processes run at once (one per core)."""
    from othertts import (
        EXTRA_FESTIVAL_VOICES,
        FESTIVAL_VOICES,
        FLITE_VOICES,
        festival_batch,
        flite_synth,
    )

    festival_voices = {**FESTIVAL_VOICES,
                       **(EXTRA_FESTIVAL_VOICES if RECIPE.extra_voices else {})}

    def flite_job(text: str, voice: str, stretch: float,
                  f0: float | None) -> list[Utterance]:
        return [(*flite_synth(text, voice, stretch=stretch, f0_mean=f0), f"flite:{voice}")]

    def festival_job(texts: list[str], voice: str, stretch: float) -> list[Utterance]:
        return [(*u, f"festival:{voice}")
                for u in festival_batch(texts, voice, stretch=stretch)]

    jobs: list[Callable[[], list[Utterance]]] = []
    for synth, k in zip(synths, _counts(synths, n), strict=True):
        if synth == "espeak":
            for i in range(k):
                lang = langs[i % len(langs)]
                voice = LANGS[lang][0] + VARIANTS[int(rng.integers(len(VARIANTS)))]
                jobs.append(partial(_espeak_job, _text(rng, lang), voice, lang,
                                    int(rng.integers(110, 230)), int(rng.integers(15, 85)),
                                    int(rng.integers(10, 95))))
        elif synth == "flite":
            for _ in range(k):
                voice = FLITE_VOICES[int(rng.integers(len(FLITE_VOICES)))]
                lang = "en" if rng.random() < 0.5 else "en-us"
                f0 = float(rng.uniform(80, 190)) if rng.random() < 0.7 else None
                jobs.append(partial(flite_job, _text(rng, lang), voice,
                                    float(rng.uniform(0.75, 1.45)), f0))
        else:
            voices = list(festival_voices)
            per = np.full(len(voices), k // len(voices))
            per[: k - per.sum()] += 1
            for voice, m in zip(voices, per, strict=True):
                lang = festival_voices[voice][0]
                for a in range(0, int(m), _FESTIVAL_BATCH):
                    texts = [_festival_text(rng, lang)
                             for _ in range(min(_FESTIVAL_BATCH, int(m) - a))]
                    jobs.append(partial(festival_job, texts, voice,
                                        float(rng.uniform(0.8, 1.4))))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return [u for batch in pool.map(lambda job: job(), jobs) for u in batch]


def corpus(n_utts: int, seed: int, langs: list[str], synths: list[str] | None = None,
           stride: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(features, labels, voice index, voice keys) for every ``stride``-th 10 ms frame of
    ``n_utts`` augmented utterances; ``keys[v]`` names voice ``v`` ("flite:awb"), so a
    model can leave out a whole synthesizer or single voices. Neighbouring frames are
    near copies: every second one carries the same information at half the memory and
    training time."""
    rng = np.random.default_rng(seed)
    t0 = time.time()
    utts = _speak(rng, synths or ["espeak"], langs, n_utts)
    print(f"  {len(utts)} utterances spoken, {time.time() - t0:.0f} s", flush=True)
    keys = sorted({u[3] for u in utts})

    def one(u: Utterance, sub: np.random.Generator,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        audio, sr, phones, key = u
        if audio.size < sr // 4 or not phones:
            return None
        lead = np.zeros(int(sub.uniform(0.05, 0.6) * sr), np.float32)
        audio = np.concatenate([lead, audio, np.zeros(int(0.3 * sr), np.float32)])
        shift = lead.size / sr
        # Vocal-tract length: reading the samples at a rate f off scales every formant
        # (and the pitch) by f and the timing by 1/f, as a longer or shorter tract and a
        # slower or faster talker would. It is the speaker variation a handful of
        # synthetic voices lack.
        f = float(sub.uniform(VTLP[0], VTLP[1])) if sub.random() < 0.7 else 1.0
        phones = [((a + shift) / f, (b + shift) / f, p) for a, b, p in phones]
        x16 = V.to_16k(_augment(audio, sr, sub), int(round(sr * f)))
        feats = V.features(x16)
        y = frame_labels(phones, feats.shape[0])[::stride]
        return (feats[::stride].astype(np.float16), y,
                np.full(y.size, keys.index(key), np.int16))

    subs = [np.random.default_rng(int(s)) for s in rng.integers(0, 2**62, len(utts))]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        rows = [r for r in pool.map(one, utts, subs) if r is not None]
    print(f"  features of {len(rows)} utterances, {time.time() - t0:.0f} s", flush=True)
    xs, ys, vs = zip(*rows, strict=True)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(vs), keys



OVERSAMPLED = (V.BILABIAL, V.LABIODENTAL)
OVERSAMPLE = 2.0


def _prior_corrected(clf) -> list[tuple[np.ndarray, np.ndarray]]:  # type: ignore[no-untyped-def]
    """The network's layers with the oversampling taken back out of its output: counting
    lip-contact frames twice doubles their prior odds, so log 2 comes off their output
    bias (exact for a softmax). The contacts still shape what the hidden layers learn,
    while the posteriors stay calibrated: uncorrected, real Mandarin speech got more
    closures a second than tests/speech/test_articulation.py's speech-like rate."""
    layers = [(w.astype(np.float32), b.astype(np.float32).copy())
              for w, b in zip(clf.coefs_, clf.intercepts_, strict=True)]
    layers[-1][1][list(OVERSAMPLED)] -= np.float32(np.log(OVERSAMPLE))
    return layers


def merged(models: list[V.VisemeModel], by: str = "logits") -> V.VisemeModel:
    """One MLP that is the ensemble of ``models`` (trained on the same rows, so with the
    same input normalisation): their hidden layers side by side, block-diagonal. ``by``
    "logits": the last layer's weights and biases averaged, so the output is the softmax
    of the mean logits; "posteriors": the last layer keeps one head per member, and the
    model averages their softmaxes. An ensemble errs less on voices none of its members
    heard than any one member does (docs/benchmarks.md); either way it is in the shipped
    format and read by the same numpy code."""
    if by not in ("logits", "posteriors"):
        raise ValueError(f"merge by logits or posteriors, not {by!r}")
    first = models[0]
    if any(len(m.layers) != len(first.layers) or not np.array_equal(m.mean, first.mean)
           or m.heads != 1 for m in models):
        raise ValueError("models to merge must be single MLPs of one shape and normalisation")
    k = len(models)
    layers = []
    for i in range(len(first.layers)):
        ws = [m.layers[i][0] for m in models]
        bs = [m.layers[i][1] for m in models]
        if i == 0:  # every member reads the same input
            w, b = np.concatenate(ws, axis=1), np.concatenate(bs)
        elif i < len(first.layers) - 1 or by == "posteriors":
            # each member's hidden units feed only its own (the last layer too: its head)
            w, b = block_diag(*ws), np.concatenate(bs)
        else:  # the output: mean logits
            w, b = np.concatenate(ws, axis=0) / k, np.mean(bs, axis=0)
        layers.append((w.astype(np.float32), b.astype(np.float32)))
    return V.VisemeModel(first.mean, first.scale, layers, k if by == "posteriors" else 1)


def _load_or_make(path: Path | None, n: int, seed: int, langs: list[str], stride: int,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The corpus of every synthesizer, cached at ``path``: models that leave a
    synthesizer or a voice out train on a subset of the same utterances."""
    if path is not None and path.is_file():
        with np.load(path) as z:
            return z["x"], z["y"], z["v"], [str(k) for k in z["keys"]]
    x, y, v, keys = corpus(n, seed, langs, list(SYNTHS), stride)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=x, y=y, v=v, keys=np.array(keys))
    return x, y, v, keys


def _kept(v: np.ndarray, keys: list[str], synths: list[str], leave_out: list[str],
          ) -> np.ndarray:
    """Rows whose voice is of a chosen synthesizer and not left out by name."""
    ok = [i for i, k in enumerate(keys)
          if k.split(":")[0] in synths and k not in leave_out]
    return np.isin(v, ok)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--hidden", default="256,128", help="hidden layer sizes")
    # The shipped model: one member, L2 1e-4, 12 epochs. On voices left out of training,
    # L2 1e-2 and three members merged heard more /p b m/ at fewer false alarms, but
    # trained on every voice they lost lone words (docs/benchmarks.md, fifth pass).
    ap.add_argument("--alpha", type=float, default=1e-4, help="L2 penalty of the MLP")
    ap.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    ap.add_argument("--members", type=int, default=1,
                    help="train this many (seeds seed, seed+1, ...) and merge them")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--synths", default=",".join(SYNTHS),
                    help="synthesizers to train on; leave one out to validate on it")
    ap.add_argument("--leave-out", default="",
                    help="voices to leave out, e.g. festival:upc_ca_ona_hts,flite:rms")
    ap.add_argument("--cache", type=Path,
                    help="keep the synthesised corpus here (float16, ~1 GB) and reuse it")
    ap.add_argument("--corpus-only", action="store_true", help="build the cache and stop")
    ap.add_argument("--short-share", type=float, default=0.0,
                    help="share of one- and two-word utterances (a corpus of its own)")
    ap.add_argument("--espeak-closures", action="store_true",
                    help="espeak stops labelled from their closure (a corpus of its own)")
    ap.add_argument("--extra-voices", action="store_true",
                    help="Festival's Czech child and Hindi voices too (a corpus of its own)")
    ap.add_argument("--band-mask", type=float, default=0.0,
                    help="share of training rows with a run of mel bands blanked")
    ap.add_argument("--merge", choices=("logits", "posteriors"), default="logits",
                    help="how --members are merged: mean logits, or mean posteriors")
    ap.add_argument("--from-members", default="",
                    help="no training: merge these saved member files (a,b,c) into --out")
    args = ap.parse_args()
    if args.from_members and args.out == OUT:  # seconds of work must not replace it
        raise SystemExit("--from-members: name the merged file with --out")
    if args.from_members:
        parts = [V.read_model(p) for p in args.from_members.split(",") if p]
        merged(parts, args.merge).save(str(args.out))
        print(f"wrote {args.out}: {len(parts)} members merged by {args.merge}")
        return
    RECIPE.short_share, RECIPE.espeak_closures = args.short_share, args.espeak_closures
    RECIPE.extra_voices = args.extra_voices
    synths = [s for s in args.synths.split(",") if s]
    if set(synths) - set(SYNTHS):
        raise SystemExit(f"--synths: choose from {', '.join(SYNTHS)}")
    leave_out = [k for k in args.leave_out.split(",") if k]

    langs = [k for k in LANGS if k not in HELD_OUT]
    print(f"corpus: {args.utterances} utterances of {', '.join(SYNTHS)}, espeak in "
          f"{len(langs)} languages; training on {', '.join(synths)}"
          + (f" less {', '.join(leave_out)}" if leave_out else ""), flush=True)
    cache_v = args.cache.with_suffix(".val.npz") if args.cache else None
    x, y, v, keys = _load_or_make(args.cache, args.utterances, 1, langs, 2)
    xv, yv, vv, keys_v = _load_or_make(cache_v, max(200, args.utterances // 10), 2, langs, 1)
    if args.corpus_only:
        print(f"corpus: {x.shape[0]} frames, voices {', '.join(keys)}")
        return
    if unknown := set(leave_out) - set(keys):
        raise SystemExit(f"--leave-out: no voice {', '.join(sorted(unknown))} in the corpus")
    keep = _kept(v, keys, synths, leave_out)
    x, y = x[keep], y[keep]
    keep_v = _kept(vv, keys_v, synths, leave_out)
    xv, yv = xv[keep_v].astype(np.float32), yv[keep_v]
    print(f"{x.shape[0]} training frames; class shares",
          np.round(np.bincount(y, minlength=len(V.CLASSES)) / y.size, 3), flush=True)
    mean = x.mean(0, dtype=np.float64).astype(np.float32)
    scale = (x.std(0, dtype=np.float64) + 1e-3).astype(np.float32)
    # Lip contacts are brief (a /p/ closure is 5-10 frames of 10 ms) and rare (~10 % of
    # frames), yet they are what a viewer checks first: their frames count twice, so the
    # model does not learn that calling them "consonant" or "silence" is cheap (the bias
    # this puts on the output is taken back out: _prior_corrected).
    rows = np.concatenate([np.arange(y.size), np.flatnonzero(np.isin(y, OVERSAMPLED))])
    hidden = tuple(int(h) for h in args.hidden.split(","))
    members = []
    for k in range(args.members):
        seed = args.seed + k
        print(f"member {k + 1} of {args.members} (seed {seed})", flush=True)
        members.append(_train_one(x, y, rows, mean, scale, xv, yv, hidden, args.alpha,
                                  seed, args.epochs, args.band_mask))
        if args.members > 1:  # each member on its own too, to compare them
            members[-1].save(str(args.out.with_suffix(f".member{k}.npz")))
    model = merged(members, args.merge)
    pv = model.posteriors(xv).argmax(1)
    print(f"held-back accuracy of the {args.members} merged: {(pv == yv).mean():.3f}")
    for c, name in enumerate(V.CLASSES):
        sel = yv == c
        if sel.any():
            print(f"  {name:12s} recall {(pv[sel] == c).mean():.2f}  "
                  f"precision {(yv[pv == c] == c).mean() if (pv == c).any() else 0:.2f}")
    model.save(str(args.out))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


def _band_masked(xb: np.ndarray, share: float, rng: np.random.Generator) -> None:
    """Blank (set to the recording's mean, 0 in its normalised log-mel) a run of 1-8 mel
    bands, the same ones in every context frame, in ``share`` of the rows of ``xb``, in
    place: frequency masking as in SpecAugment, so no one stretch of the spectrum (where
    one synthesizer's formants sit) decides a class alone."""
    n = xb.shape[0]
    pick = np.flatnonzero(rng.random(n) < share)
    if pick.size == 0:
        return
    width = rng.integers(1, 9, pick.size)
    start = rng.integers(0, V.N_MELS - width + 1)
    bands = np.arange(V.N_MELS + 1)  # the last column, energy, is never in a run
    run = (bands >= start[:, None]) & (bands < (start + width)[:, None])
    xb[pick] = np.where(np.tile(run, len(V.CONTEXT)), 0.0, xb[pick])


def _train_one(x: np.ndarray, y: np.ndarray, rows: np.ndarray, mean: np.ndarray,
               scale: np.ndarray, xv: np.ndarray, yv: np.ndarray, hidden: tuple[int, ...],
               alpha: float, seed: int, epochs: int, band_mask: float = 0.0,
               ) -> V.VisemeModel:
    """One member: an MLP trained on ``rows`` (contacts listed twice) in ``seed``'s order;
    with ``band_mask``, that share of rows has a random run of mel bands blanked
    (``_band_masked``)."""
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=hidden, alpha=alpha, batch_size=512,
                        learning_rate_init=1e-3, random_state=seed)
    classes = np.arange(len(V.CLASSES))
    rng = np.random.default_rng(seed)
    chunk = 200_000  # rows normalised to float32 at a time: the corpus stays float16
    for epoch in range(epochs):
        order = rows[rng.permutation(rows.size)]
        for a in range(0, order.size, chunk):
            idx = order[a : a + chunk]
            xb = x[idx].astype(np.float32)
            if band_mask:
                _band_masked(xb, band_mask, rng)
            xb = (xb - mean) / scale
            clf.partial_fit(xb, y[idx], classes=classes)
        model = V.VisemeModel(mean, scale, _prior_corrected(clf))
        acc = float((model.posteriors(xv).argmax(1) == yv).mean())
        print(f"epoch {epoch + 1}: loss {clf.loss_:.4f}, held-back accuracy {acc:.3f}",
              flush=True)
    return model


if __name__ == "__main__":
    main()
