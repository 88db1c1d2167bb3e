"""speech: what the new audio says the mouth must do, frame by frame.

Audio features (``features``), viseme posteriors from a small network shipped with the
package (``visemes``), articulation cues (``cues``), the person's own range and speed
(``profile``, ``calibration``), and the targets (``mouth``) made into movement a real
mouth can make (``trajectory``). May import ``media`` and ``faces``; nothing of render
or service.
"""
