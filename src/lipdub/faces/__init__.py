"""faces: who is in the video, where, and when.

The identify verb (``identify``): detection and landmark tracking on every frame
(``tracker``), people from tracks (``cluster``), covered mouths (``occlusion``), the
lower-face crops the renderer's bank is built from (``crops``), and the ``Session`` that
carries all of it to sync. May import ``media``; nothing of speech, render or service.
"""
