"""render: the person's own mouth, picked per frame and blended into the video.

The sync verb (``sync``), the engine interface and the classic engine (``engine``), the
bank of aligned lower faces (``bank``), the choice of one entry per frame (``select``),
compositing (``compose``, ``sharpness``) and the garbage guards (``entries``,
``targets``, ``patch_check``). May import ``media``, ``faces`` and ``speech``; nothing
of the service.
"""
