"""The synthetic clip every bag test uses: small frames and few of them, so the suite stays
fast on two CPU cores, at a frame rate the tiny model keeps up with."""

CLIP_FRAMES = 40
CLIP_SIZE = (128, 160)
CLIP_FPS = 10.0
