"""Benchmarks: each module measures one thing and prints the figures docs/benchmarks.md
quotes. Run them from the repository root as modules, e.g. ``python -m bench.quality``
(the package imports then resolve with no path set-up).

Shared: ``common`` (paths, the quality clip list, the curve measures, child-process
measuring), ``_clips`` (the 720p/1080p talking heads made from the shared media) and
``_landmarks`` (the dlib reference landmarks). ``api`` and ``spans`` reuse the test
suite's real server and synthetic-video helpers (``tests.service.helpers``,
``tests.mediagen``) rather than keep a second copy.
"""
