"""Video in and out (kept for the modules that import it from here): probing in
media/probe.py, decoding in media/decode.py, encoding in media/encode.py."""

from lipdub.media.decode import Frame, iter_frames, plain_frame, queue_depth
from lipdub.media.encode import (
    DEFAULT_CRF,
    DEFAULT_PRESET,
    DEFAULT_X264_PARAMS,
    LARGE_PICTURE,
    LARGE_PICTURE_X264_PARAMS,
    BackgroundWriter,
    VideoWriter,
    x264_params_for,
)
from lipdub.media.pools import usable_cores
from lipdub.media.probe import (
    MAX_PIXELS,
    PictureTags,
    VideoInfo,
    picture_tags,
    probe,
    source_timing,
)

__all__ = ["DEFAULT_CRF", "DEFAULT_PRESET", "DEFAULT_X264_PARAMS", "LARGE_PICTURE",
           "LARGE_PICTURE_X264_PARAMS", "MAX_PIXELS", "BackgroundWriter", "Frame",
           "PictureTags", "VideoInfo", "VideoWriter", "iter_frames", "picture_tags",
           "plain_frame", "probe", "queue_depth", "source_timing", "usable_cores",
           "x264_params_for"]
