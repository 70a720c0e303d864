"""Video (ConST-CL): clip sampling from decoded videos, the views of a pair of clips with their boxes, and the built-in
synthetic `moving-objects` set.

video files -> data/video.py (PyAV, decoded once into the frame cache) -> VideoClips (two clips far apart in time)
-> ClipViews (one crop for both, colour per clip, K boxes) -> a video method
"""

from .clips import BUILTIN_VIDEO, VideoClips, centre_clip, clip_span, decode_videos, far_apart_starts, open_videos
from .labeled import LABELED_VIDEO, LabeledClips, open_labeled_video
from .moving_objects import MOTIONS, MovingObjects, load_moving_objects, make_clips
from .views import MEAN, STD, ClipViews, eval_clip, random_boxes, to_input

__all__ = [
    "BUILTIN_VIDEO", "LABELED_VIDEO", "MEAN", "MOTIONS", "STD", "ClipViews", "LabeledClips", "MovingObjects",
    "VideoClips", "centre_clip", "clip_span", "decode_videos", "eval_clip", "far_apart_starts", "load_moving_objects",
    "make_clips", "open_labeled_video", "open_videos", "random_boxes", "to_input",
]
