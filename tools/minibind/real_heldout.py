#!/usr/bin/env python3
"""Write the committed real held-out set (issue 23; docs/minibind-real-data.md §3):
real people's spoken and handwritten digits that MiniBind's training never sees.

    python tools/minibind/real_heldout.py --fsdd /tmp/fsdd/recordings --out tests/fixtures/real-heldout

- `fsdd/{digit}_{speaker}_{rep}.wav`: Free Spoken Digit Dataset repetitions 0, 1, 2
  (inside FSDD's own test split 0-4) of all 6 speakers × 10 digits, byte-identical
  copies (180 WAVs, 8 kHz mono 16-bit). FSDD: github Jakobovski/free-spoken-digit-dataset
  at FSDD_COMMIT; get it with `fetch github:Jakobovski/free-spoken-digit-dataset`, then
  `git --git-dir=/work/.mirror/Jakobovski+free-spoken-digit-dataset/repo archive
  FSDD_COMMIT recordings | tar -x -C /tmp/fsdd`.
- `load_digits/{digit}_{index:04}.png`: the first 20 of each digit of scikit-learn's
  `load_digits` in file order (index = its row), 8×8 grey PNGs as real_eval.py writes
  them (ink dark on white). Needs scikit-learn in the running Python.
- `README.md`: what, where from, how made, licences.

EVALUATION ONLY: nothing of this set (nor of FSDD or load_digits) may be trained or
tuned on. Read by tests/minibind.rs (`embed_names_real_people_digits`) and by
tools/minibind/eval (the "real held-out people" figures). The script replaces the
`fsdd/` and `load_digits/` folders under --out; running it again gives the same bytes
(same FSDD commit, scikit-learn and Pillow).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import real_eval  # noqa: E402

FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_REPS = (0, 1, 2)
DIGITS_PER_DIGIT = 20

README = """\
# Real held-out people: spoken and handwritten digits (evaluation only)

Real people's digits for MiniBind's real-data figures (issue 23): the Rust test
`embed_names_real_people_digits` (tests/minibind.rs) asserts emergent zero-shot
floors on them, and `tools/minibind/eval` reports them under "real held-out people".

**Evaluation only.** Nothing here, and nothing else of FSDD or scikit-learn's
`load_digits`, is ever trained or tuned on. Their speakers and writers are held out.

Made by `tools/minibind/real_heldout.py` (rerun it to check: it writes the same bytes):

    git --git-dir=<FSDD mirror> archive {commit} recordings | tar -x -C /tmp/fsdd
    python tools/minibind/real_heldout.py --fsdd /tmp/fsdd/recordings --out tests/fixtures/real-heldout

## `fsdd/`: {n_wav} spoken digits, 6 speakers (licence: CC BY-SA 4.0)

- Source: Free Spoken Digit Dataset (FSDD) by Zohar Jackson (Jakobovski) and
  contributors, https://github.com/Jakobovski/free-spoken-digit-dataset, commit
  `{commit}`, folder `recordings/`.
- Chosen: repetitions {reps} (inside FSDD's official test split, repetitions 0-4) of every
  digit 0-9 for each of the 6 speakers (all male, accents per FSDD's `metadata.py`):
  george (GRC/Greek), jackson (USA), lucas (DEU/German), nicolas (BEL/French),
  theo (USA), yweweler (DEU/German).
- File names are FSDD's own, `{{digit}}_{{speaker}}_{{repetition}}.wav`: 8 kHz mono
  16-bit PCM. The files are **unmodified**, byte-identical copies.
- Licence: Creative Commons Attribution-ShareAlike 4.0 International,
  https://creativecommons.org/licenses/by-sa/4.0/ . The ShareAlike terms cover these
  WAV files only (they are kept unmodified in their own folder); they do not extend
  to sensebind's code or to anything else in this repository.

## `load_digits/`: {n_png} handwritten digits of UCI test-set writers (licence: BSD-3-Clause / CC BY 4.0)

- Source: scikit-learn's bundled `sklearn.datasets.load_digits()` (scikit-learn
  {sklearn}, BSD-3-Clause), which is a copy of the test set of the UCI "Optical
  Recognition of Handwritten Digits" data set (E. Alpaydin, C. Kaynak, 1998,
  https://doi.org/10.24432/C50P49, CC BY 4.0): 1 797 digits of 13 writers none of whom
  wrote the UCI training set, 8×8 blocks counting ink pixels 0-16.
- Chosen: the first {per_digit} images of each digit 0-9 in file order.
  `{{digit}}_{{index}}.png`: index is the image's row in `load_digits` (0-based, 4 digits).
- Changed: each 8×8 count image is written as an 8×8 8-bit grey PNG,
  pixel = round(255 − count × 255 / 16) (ink dark on white paper), with Pillow {pillow}.
  The daemon upscales it like any other image.
- Licences: scikit-learn's BSD-3-Clause licence; the UCI data under CC BY 4.0,
  https://creativecommons.org/licenses/by/4.0/ (attribution above).
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fsdd", type=Path, required=True, help="FSDD recordings directory")
    ap.add_argument("--out", type=Path, required=True, help="e.g. tests/fixtures/real-heldout")
    a = ap.parse_args(argv)
    import PIL
    import sklearn

    images, target = real_eval.load_digits_data()
    a.out.mkdir(parents=True, exist_ok=True)
    fsdd_out, digits_out = a.out / "fsdd", a.out / "load_digits"
    for d in (fsdd_out, digits_out):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    n_wav = 0
    for speaker in FSDD_SPEAKERS:
        for digit in range(10):
            for rep in FSDD_REPS:
                name = f"{digit}_{speaker}_{rep}.wav"
                src = a.fsdd / name
                if not src.is_file():
                    sys.exit(f"missing FSDD recording {src}")
                shutil.copyfile(src, fsdd_out / name)
                n_wav += 1
    taken = {d: 0 for d in range(10)}
    for i, (img, y) in enumerate(zip(images, target)):
        y = int(y)
        if taken[y] < DIGITS_PER_DIGIT:
            real_eval.digit_png(img, digits_out / real_eval.digit_png_name(y, i))
            taken[y] += 1
    n_png = sum(taken.values())
    assert n_png == 10 * DIGITS_PER_DIGIT, taken
    (a.out / "README.md").write_text(README.format(
        commit=FSDD_COMMIT, n_wav=n_wav, n_png=n_png, reps=", ".join(map(str, FSDD_REPS)),
        per_digit=DIGITS_PER_DIGIT,
        sklearn=sklearn.__version__, pillow=PIL.__version__))
    size = sum(p.stat().st_size for p in a.out.rglob("*") if p.is_file())
    print(f"{a.out}: {n_wav} WAVs, {n_png} PNGs, README.md; {size} bytes")
    return 0


def items(root: Path):
    """The committed set as real_eval.score() items: (speech, handwriting), each
    [(path, digit, group)]; group = the FSDD speaker, or "load_digits"."""
    speech = real_eval.fsdd_items(root / "fsdd", 0, 10 ** 9)
    hand = []
    for p in sorted((root / "load_digits").glob("*.png")):
        hand.append((p.resolve(), int(p.name.split("_")[0]), "load_digits"))
    return speech, hand


if __name__ == "__main__":
    sys.exit(main())
