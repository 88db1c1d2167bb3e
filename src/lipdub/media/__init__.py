"""media: files in, files out, as a player would present them.

Probing (``probe``), streamed decoding into plain upright 8-bit 4:2:0 frames
(``decode``), H.264 + AAC writing that keeps timestamps, pixel shape and colour tags
(``encode``), editing a face's window of a frame in place (``yuv``), audio decoding and
mixing (``audio``), length modes (``fit``) and safe downloads of user URLs (``fetch``).
The bottom layer: it imports nothing else of lipdub but ``errors``.
"""
