"""`s5 visualize-mask` internals: run S5's token selection on a video, draw it, and write GIF/MP4/PNG."""
