"""Does the viseme model hear a closure in a voice it was not trained on?

    .venv/bin/python tools/eval_visemes.py                       # the shipped model
    .venv/bin/python tools/eval_visemes.py --model a.npz --model b.npz
    .venv/bin/python tools/eval_visemes.py --contacts --model a.npz  # hits and false alarms
    .venv/bin/python tools/eval_visemes.py --short-words             # one-word recordings

For each synthesizer and voice, fresh phone-timed sentences (a seed training never uses)
are spoken, clean and through a simulated room and microphone; for every phone of a
class the renderer cares about, "hit" means the model gives that class a posterior above
0.5 at some 10 ms frame inside the phone. This is the measure of issue 20 ("the right
class above 0.5 somewhere inside 100 % of espeak's /p b m/ and rounded vowels, but inside
only 56 % of the other synthesizers' /p b m/ ..."), so a held-out synthesizer's figure
here is directly comparable.

``--contacts`` reads the model as the renderer does: contact segments (the 30 ms mean of
the bilabial posterior over a threshold, ``visemes.contact_segments``) at four thresholds, pooled
over a group of voices (``--group``: the voices a model trained ``--leave-out
flite:awb,flite:rms,festival:ked_diphone,festival:upc_ca_ona_hts`` never heard, espeak's
English, or espeak's held-out German and Spanish), clean and through a room: the share
of /p b m/ a segment touches, and the segments that touch none, per minute of speech.
A model that finds more at the same false alarms tells the classes apart better.
``--short-words`` speaks 30 one- and two-word recordings ("Papa", "apa", "Bob") in five
languages with espeak-ng, and every word with a b, m or p of the test sentences alone in
espeak's English, German and Spanish, flite's awb and rms and Festival's ked, each on its
own (the recording is all there is to normalise by), clean and through a room.

Validation holds out whole synthesizers: train with ``--synths espeak,festival`` and read
the flite rows, train with ``--synths espeak,flite`` and read the Festival rows. The voices
kal and slt are never spoken here (tools/othertts.FORBIDDEN).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lipdub.speech import visemes as V  # noqa: E402
from othertts import festival_batch, flite_synth  # noqa: E402
from phonetimed import silent_frames  # noqa: E402
from phonetimed import synth as synth_espeak  # noqa: E402
from train_visemes import _augment, viseme_of  # noqa: E402

KINDS = {"bilabial": V.BILABIAL, "labiodental": V.LABIODENTAL, "round": V.ROUND,
         "spread": V.SPREAD, "open": V.OPEN}
EN = [
    "Maybe the baby will bump the bowl of plums.", "Bob moved a few boxes up the path.",
    "Who put the blue boots by the pool?", "Pam sees a big map of the moon.",
    "Please bring me five more oval pebbles.", "The old boat floats past the white bridge.",
    "My mother bought two warm rolls for Paul.", "Be brave, Tom, the movie begins soon.",
    "The puppy ran up the bumpy path to the barn.", "Amber bought a bamboo lamp in Bombay.",
    "We hope the rope will hold the boat in the bay.", "Maple syrup pours slowly from the cup.",
    "Tim swims by the pier most mornings in May.", "Put the woolen robe back on the bed.",
    "Members of the band played a happy tune.", "A bumblebee buzzed above the empty bench.",
]
CA = ["El meu pare beu vi blanc amb pa.", "La mare compra pomes i prunes al mercat.",
      "Bon dia, vols un bombó de maduixa?", "El nen puja a la barca blava amb el pare.",
      "Plou molt a la muntanya a la primavera.", "Pau porta un barret molt bonic."]
IT = ["Il bambino beve molto latte.", "Mamma porta una borsa blu.",
      "Paolo mangia pane e burro.", "Vorrei un piatto di pasta fresca."]
CS = ["Maminka peče buchty pro babičku.", "Bratr koupil nové boty.",
      "Pes běží po mokré louce.", "Pepa má modrou bundu."]
FI = ["Mummo puhuu puhelimessa.", "Pojat pelaavat palloa puistossa.",
      "Bussi tulee pian pysäkille.", "Äiti paistaa pullaa."]
DE = ["Die Bienen fliegen über Obst und Butter.", "Mein Vater baut ein blaues Boot.",
      "Wir essen Pommes am Montag.", "Bitte bring mir den Brief morgen."]
ES = ["Mi madre bebe un vaso de agua.", "El barco blanco pasa por el puerto.",
      "Pablo compra pan y manzanas.", "Bueno, vamos a la playa mañana."]

# (synthesizer, voice, sentences)
VOICES: list[tuple[str, str, list[str]]] = [
    ("espeak", "de+m3", DE), ("espeak", "es+f2", ES), ("espeak", "en-us+m1", EN),
    ("festival", "ked_diphone", EN), ("festival", "lp_diphone", IT),
    ("festival", "czech_machac", CS), ("festival", "hy_fi_mv_diphone", FI),
    ("festival", "upc_ca_ona_hts", CA),
    ("flite", "awb", EN), ("flite", "rms", EN),
]


def speak(synth: str, voice: str, texts: list[str]) -> list[tuple[np.ndarray, int, list]]:
    if synth == "festival":
        return festival_batch(texts, voice)
    if synth == "flite":
        return [flite_synth(t, voice) for t in texts]
    return [synth_espeak(t, voice) for t in texts]


def hits(model: V.VisemeModel, x16: np.ndarray, phones: list) -> dict[str, list[bool]]:
    post = model.posteriors(V.features(x16))
    out: dict[str, list[bool]] = {k: [] for k in KINDS}
    for a, b, lab in phones:
        cls = viseme_of(lab)
        i0, i1 = int(round(a * 100)), max(int(round(b * 100)), int(round(a * 100)) + 1)
        for name, c in KINDS.items():
            if c in cls and i0 < post.shape[0]:
                out[name].append(bool(post[i0:i1, c].max() > 0.5))
    return out


GROUPS: dict[str, list[tuple[str, str, list[str]]]] = {
    "unheard": [("flite", "awb", EN), ("flite", "rms", EN), ("festival", "ked_diphone", EN),
                ("festival", "upc_ca_ona_hts", CA)],
    "espeak-en": [("espeak", "en-us+m1", EN), ("espeak", "en-us+f3", EN)],
    "espeak-heldout": [("espeak", "de+m3", DE), ("espeak", "es+f2", ES), ("espeak", "de", DE),
                       ("espeak", "es", ES), ("espeak", "es+m2", ES)],
}
THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
SHORT_WORDS = [
    ("apa", "es"), ("apa apa", "es"), ("mapa", "es"), ("papa", "es"), ("Pablo", "es"),
    ("bebe", "es"), ("Papa", "de"), ("Oma", "de"), ("Baby", "de"), ("Bob", "en-us"),
    ("Mom", "en-us"), ("Pop", "en-us"), ("apple", "en-us"), ("happy", "en-us"),
    ("maybe", "en-us"), ("Emma", "en-us"), ("papa", "fr"), ("pomme", "fr"), ("ba", "es"),
    ("ama", "es"), ("upa", "es"), ("ipi", "es"), ("opo", "es"), ("epa", "es"), ("apa", "it"),
    ("apa", "de"), ("apa", "en-us"), ("abba", "en-us"), ("Umpa", "de"), ("ampa", "es"),
]
# Every word with a b, m or p in the test sentences, spoken alone: many more contexts
# than the words above, which repeat "apa" (each voice reads apart: a model trained
# --leave-out flite:awb,... never heard those).
SHORT_WORD_VOICES: list[tuple[str, str, list[str]]] = [
    ("espeak", "en-us+m1", EN), ("espeak", "de+m3", DE), ("espeak", "es+f2", ES),
    ("flite", "awb", EN), ("flite", "rms", EN), ("festival", "ked_diphone", EN),
]


def lone_words(sentences: list[str]) -> list[str]:
    """The distinct words of ``sentences`` that have a b, m or p, in order."""
    words = [w.strip(".,?!") for t in sentences for w in t.split()]
    return list(dict.fromkeys(w for w in words if set(w.lower()) & set("bmp")))


def _context(phones: list, k: int, quiet: np.ndarray) -> dict[str, str]:
    """Where /p b m/ number ``k`` of ``phones`` sits, for ``--misses``: the sound, what
    comes before and after it (a pause: a gap of 50 ms or more, or the recording's end),
    its length, and how much of it is silent (``quiet``: ``phonetimed.silent_frames`` of
    the clean recording at 10 ms; a stop's closure)."""
    a, b, lab = phones[k]
    span = quiet[int(a * 100) : max(int(b * 100), int(a * 100) + 1)]
    silent = float(span.mean()) if span.size else 0.0

    def kind(j: int, gap: float) -> str:
        if j < 0 or j >= len(phones) or gap >= 0.05:
            return "pause"
        v = viseme_of(phones[j][2])
        return "vowel" if set(v) & {V.ROUND, V.SPREAD, V.OPEN, V.MID} else "consonant"

    prev = kind(k - 1, a - phones[k - 1][1] if k > 0 else 1.0)
    nxt = kind(k + 1, phones[k + 1][0] - b if k + 1 < len(phones) else 1.0)
    ms = 1000 * (b - a)
    return {"sound": lab[:1], "after a": prev, "before a": nxt,
            "length": "< 60 ms" if ms < 60 else "60-100 ms" if ms < 100 else ">= 100 ms",
            "silent": "< 1/3" if silent < 1 / 3 else "1/3-2/3" if silent < 2 / 3 else ">= 2/3"}


def contacts(models: list[tuple[str, V.VisemeModel]], group: str, seed: int,
             misses: bool = False) -> None:
    """Hits and false alarms of bilabial contact segments, pooled over ``group``; with
    ``misses``, the hits at the renderer's threshold by where the /p b m/ sits."""
    rng = np.random.default_rng(seed)
    tally = {name: {t: [0, 0, 0] for t in THRESHOLDS} for name, _ in models}  # hit, n, false
    by_context: dict[tuple[str, str, str, str], list[bool]] = {}  # (model, aspect, value, voice)
    seconds = 0.0
    for synth, voice, texts in GROUPS[group]:
        utts = speak(synth, voice, texts)
        for cond in ("clean", "room"):
            for audio, sr, phones in utts:
                lead = np.zeros(int(0.3 * sr), np.float32)
                x = np.concatenate([lead, audio, lead])
                if cond == "room":
                    x = _augment(x, sr, rng)
                ks = [k for k, (_, _, lab) in enumerate(phones)
                      if V.BILABIAL in viseme_of(lab)]
                bil = [(int(round((phones[k][0] + 0.3) * 100)),
                        int(round((phones[k][1] + 0.3) * 100)) + 1) for k in ks]
                seconds += audio.size / sr
                quiet = silent_frames(audio, sr, 100) if misses else np.zeros(0, bool)
                f = V.features(V.to_16k(x, sr))
                for name, m in models:
                    p = m.posteriors(f)[:, V.BILABIAL]
                    for t in THRESHOLDS:
                        segs = V.contact_segments(p, t)
                        row = tally[name][t]
                        # 20 ms of slack either side, as _contact leads
                        found = [any(a < i1 + 2 and b > i0 - 2 for a, b in segs)
                                 for i0, i1 in bil]
                        row[0] += sum(found)
                        row[1] += len(bil)
                        row[2] += sum(not any(a < i1 + 2 and b > i0 - 2 for i0, i1 in bil)
                                      for a, b in segs)
                        if not misses or t != V.BILABIAL_CONTACT:
                            continue
                        for k, hit in zip(ks, found, strict=True):
                            for aspect, value in _context(phones, k, quiet).items():
                                for who in (voice, "all"):
                                    by_context.setdefault((name, aspect, value, who),
                                                          []).append(hit)
    print(f"{group}: share of /p b m/ a contact segment touches, and false segments per "
          f"minute ({seconds / 60:.1f} min of speech, clean and room)")
    for name, _ in models:
        print(f"  {name[:16]:16s} " + "   ".join(
            f"@{t}: {100 * r[0] / max(r[1], 1):4.1f} % fa {r[2] / seconds * 60:4.1f}"
            for t, r in tally[name].items()))
    if not misses:
        return
    voices = [v for _, v, _ in GROUPS[group]] + ["all"]
    print(f"\nshare found at {V.BILABIAL_CONTACT} by where the /p b m/ sits (n over all "
          "voices)")
    print(f"  {'model':16s} {'':22s} " + " ".join(f"{v[:12]:>12s}" for v in voices))
    for name, _ in models:
        keys = sorted({(a, v) for (m, a, v, _) in by_context if m == name})
        for aspect, value in keys:
            cells = []
            for who in voices:
                h = by_context.get((name, aspect, value, who), [])
                cells.append(f"{100 * np.mean(h):5.0f} % n{len(h):<3d}" if h else " " * 12)
            print(f"  {name[:16]:16s} {aspect + ' ' + value:22s} " + " ".join(cells))


def short_words(models: list[tuple[str, V.VisemeModel]], seed: int) -> None:
    """Share of /p b m/ heard (10 ms posterior over 0.5 within 10 ms of the phone) in
    recordings of one or two words, each normalised on its own: as the synthesizer wrote
    it ("clean": a TTS file, digital silence around it on the video's timeline) and with
    0.3 s either side through a room and microphone ("room": a recorded word); and, clean,
    apart for the recording's first or last phone ("edge": "Bob") and the others."""
    rng = np.random.default_rng(seed)
    utts = {"espeak, 30 short": [synth_espeak(text, voice) for text, voice in SHORT_WORDS]}
    for synth, voice, texts in SHORT_WORD_VOICES:
        utts[f"{synth} {voice}"] = speak(synth, voice, lone_words(texts))
    print("short words: share of /p b m/ heard, clean / room")
    for source, recordings in utts.items():
        peaks: dict[tuple[str, str], list[float]] = {
            (name, c): [] for name, _ in models for c in ("clean", "room", "edge", "inner")}
        for audio, sr, phones in recordings:
            pad = np.zeros(int(0.3 * sr), np.float32)
            for cond, x, shift in (
                    ("clean", audio, 0.0),
                    ("room", _augment(np.concatenate([pad, audio, pad]), sr, rng), 0.3)):
                f = V.features(V.to_16k(x, sr))
                for name, m in models:
                    p = m.posteriors(f)[:, V.BILABIAL]
                    for k, (a, b, lab) in enumerate(phones):
                        if V.BILABIAL in viseme_of(lab):
                            i0 = max(int((a + shift) * 100) - 1, 0)
                            peak = float(p[i0 : int((b + shift) * 100) + 2].max())
                            peaks[name, cond].append(peak)
                            if cond == "clean":
                                at = "edge" if k in (0, len(phones) - 1) else "inner"
                                peaks[name, at].append(peak)
        for name, _ in models:
            c, r, e, i = (np.mean(np.asarray(peaks[name, k]) > 0.5) if peaks[name, k] else 0.0
                          for k in ("clean", "room", "edge", "inner"))
            print(f"  {name[:16]:16s} {source:22s} {100 * c:3.0f} % / {100 * r:3.0f} % "
                  f"of {len(peaks[name, 'clean'])}   clean at an edge {100 * e:3.0f} % of "
                  f"{len(peaks[name, 'edge'])}, inside {100 * i:3.0f} %")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, action="append",
                    help="viseme_mlp.npz files to compare (default: the shipped one)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--contacts", action="store_true",
                    help="contact segments' hits and false alarms over --group")
    ap.add_argument("--group", choices=sorted(GROUPS), default="unheard")
    ap.add_argument("--misses", action="store_true",
                    help="with --contacts: hits by the /p b m/'s sound, neighbours, length")
    ap.add_argument("--short-words", action="store_true")
    args = ap.parse_args()
    paths = args.model or [Path(V.__file__).with_name("viseme_mlp.npz")]
    if len({p.stem for p in paths}) < len(paths):  # rows are named (and tallied) by stem
        raise SystemExit("--model: give the files distinct names (a/ho.npz, b/ho.npz clash)")
    models = [(p.stem, V.read_model(str(p))) for p in paths]
    if args.contacts or args.short_words:
        if args.contacts:
            contacts(models, args.group, args.seed, args.misses)
        if args.short_words:
            short_words(models, args.seed)
        return
    rng = np.random.default_rng(args.seed)
    print(f"{'voice':28s} {'cond':5s} " + " ".join(
        f"{m[:10]:>10s}:{k[:5]:5s}" for m, _ in models for k in ("bilab", "round", "open",
                                                                   "sprd")))
    for synth, voice, texts in VOICES:
        utts = speak(synth, voice, texts)
        for cond in ("clean", "room"):
            tot: list[dict[str, list[bool]]] = [{k: [] for k in KINDS} for _ in models]
            for audio, sr, phones in utts:
                if audio.size == 0:
                    continue
                lead = np.zeros(int(0.3 * sr), np.float32)
                x = np.concatenate([lead, audio, lead])
                ph = [(a + 0.3, b + 0.3, p) for a, b, p in phones]
                if cond == "room":
                    x = _augment(x, sr, rng)
                x16 = V.to_16k(x, sr)
                for t, (_, m) in zip(tot, models, strict=True):
                    for k, v in hits(m, x16, ph).items():
                        t[k].extend(v)
            cells = []
            for t in tot:
                for k in ("bilabial", "round", "open", "spread"):
                    v = t[k]
                    cells.append(f"{100 * np.mean(v):6.0f}% n{len(v):<3d}" if v else " " * 11)
            print(f"{synth + ' ' + voice:28s} {cond:5s} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
