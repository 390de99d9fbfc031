"""synthvid: an offline synthetic referring-expression video set, generated from a seed.

It lets the project train and test with no download (CI, the demo). Every clip shows 3-5 coloured
shapes moving over a textured background; each (clip, expression) pair is one video entry in the
VID-Sentence format of docs/behaviour.md §1, plus an image-level export in the RefCOCO 'unc' item format.

Layout under the output root ``R`` (all paths inside the indexes are relative to ``R``)::

    frames/<split>/<video>/%06d.JPEG          JPEG frames (quality ``jpeg_quality``), frame index from 0
    VID/VID_video_level_<split>.pth           list[video], video = list[(image_path, [x1,y1,x2,y2], phrase)]
    VID/corpus.pth                            utils.word_utils corpus (<pad> = 0, <unk>, <eos>) of the
                                              training phrases, then the grammar's few other words
    VID/expressions_<split>.json              per video entry: video, phrase, types, target, num_frames,
                                              kind (the type the entry was generated for), reference
    VID/objects_<split>.json                  per clip: video, width, height, num_frames and, per object:
                                              id, shape, colour, size, z (draw order), moving, and per frame
                                              box, velocity (displacement to the next frame; the last
                                              repeats) and visible fraction
    synthvid/synthvid_<split>.pth             (image_file, '', [x,y,w,h], phrase, types) per (frame, expression),
                                              every ``image_stride``-th frame; the last field ('attributes'
                                              in RefCOCO) holds the expression types
    synthvid/corpus.pth                       the same corpus
    VID/degradations_<split>.json             only with a hard-frame option on: every frame's path (as in the
                                              indexes, shared by the image-level export) -> sorted names of
                                              its degradations ([] for a clean frame); see ``hard``
    manifest.json                             parameters and file counts, written last (completion marker)

Each clip gets ``expressions_per_video`` entries (default 2), each for a different target. Boxes are
the full (unoccluded) object box in pixel-edge coordinates (pixel ``i`` spans ``[i, i+1]``).

Design, so that the set tests the method rather than a detector:

- Vocabulary: 5 shapes x 5 well-separated colours x 2 sizes (big is 1.8x small). Every expression needs
  the language: the target always has a look-alike (same shape, and usually same colour or size).
- Expression kinds (mix set by ``type_mix``, default 40/30/30):
  attribute ("the big red circle": the smallest set of colour/size words that singles the target out,
  shape alone never suffices); location ("the circle left of the blue square": the reference is unique
  by its own description, and the relation holds for the target and fails for every look-alike in every
  frame, with a margin of ``RELATION_MARGIN`` x the reference's extent, i.e. beyond its edge); motion.
- Motion and the model: co-attention between frames is symmetric in time (training pairs attend both
  ways, evaluation windows average past and future frames), so the model can tell moving from still
  but not left from right. A motion expression therefore separates the target from its look-alikes by
  moving vs still only ("the moving red circle", "the still blue square"); a direction word ("the red
  circle moving left") is added only when it is true in every frame and is never what disambiguates.
  Horizontal flips (which swap 'left'/'right' in the phrase) mirror both relations and motion, so
  flipped samples stay correct.
- Each phrase is checked against the ground-truth tracks by :func:`check_expression` (the same check the
  tests run on the saved ``objects_<split>.json``): it must denote the target and nothing else in every
  frame; the target (and reference) must be at least half visible in every frame (z-order is fixed per
  clip, objects of different colours overlap at times; objects of one colour never touch, they would
  merge into one blob). Failing scenes are resampled.
- Frames are 160-256 wide and 112-224 high; static camera, textured backgrounds (smooth noise,
  gradients, stripes, low-contrast lines and elongated ellipses that are not vocabulary shapes) and mild
  per-frame noise.

Determinism: every clip has its own ``numpy`` seed sequence derived from (seed, split, index), so the
same seed gives byte-identical indexes and JPEGs, whatever ``workers`` is.

Hard frames (``hard``, all off by default): motion blur, partial occlusion, defocus and low light as sparse
per-frame events; frames without an event are byte-identical to the set generated without them.

CLI: ``python -m dataset.synthvid --out DIR --seed S [--train_videos N] [--frames MIN MAX] [--motion_blur RATE ...]
[--force]``.

Modules: ``expressions`` (grammar, parser, meaning over tracks, the check), ``queries`` (choosing an expression
of each kind), ``scene`` (objects, trajectories, visibility, rendering), ``hard`` (hard-frame degradations),
``clips`` (one clip, sampled until its expressions exist), ``writer`` (the set on disk, idempotent), ``config``
(parameters), ``cli``.
"""
from dataset.synthvid.config import SPLITS, SynthConfig
from dataset.synthvid.expressions import (
    KINDS,
    VISIBLE_MIN,
    ClipObjects,
    Query,
    check_expression,
    expression_types,
    parse_phrase,
    render_phrase,
)
from dataset.synthvid.hard import DEGRADATIONS, HardFrames
from dataset.synthvid.writer import MANIFEST, build_synthvid_corpus, degradations_path, generate, load_clips

__all__ = ["DEGRADATIONS", "KINDS", "MANIFEST", "SPLITS", "VISIBLE_MIN", "ClipObjects", "HardFrames", "Query",
           "SynthConfig", "build_synthvid_corpus", "check_expression", "degradations_path", "expression_types",
           "generate", "load_clips", "parse_phrase", "render_phrase"]
